"""The run folder's layout: where each step's files go, named once (stdlib only: the TGI native
client imports it in the TGI venv)."""

from __future__ import annotations

# The record file of TGI's native-route measurement, beside the scenarios' (results/raw/E/M/NAME.jsonl).
NATIVE_RUN = "native-single"
