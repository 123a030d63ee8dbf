"""Result bundles: results/bundles/{run_id}.tar.gz, what making and verifying one share.

A bundle holds one run's tables, raw records, memory results, specs, locks, model and prompt
metadata, plots, report pages, provenance and logs, under a single folder named after the run id,
with manifest.json listing the sha256 and size of every other member. bundle_make.py writes one
(`infbench bundle`, the bundle rule); bundle_verify.py checks one (`infbench verify`).
"""

from __future__ import annotations

import hashlib
import re

FORMAT = "infbench-bundle/1"
MANIFEST = "manifest.json"
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Engine, model and scenario names, as the config schema allows them (env_name): one path component.
PLAIN_NAME_RE = RUN_ID_RE


class BundleError(RuntimeError):
    pass


class UnsafeArchiveError(BundleError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
