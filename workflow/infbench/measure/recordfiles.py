"""Writing raw record files: the JSONL record of truth, then its Parquet copy for fast merges.

Apart from records.py (the record itself) and recordframe.py (records as polars frames), which
this module alone uses together: neither of them imports the other's way up.
"""

from __future__ import annotations

from pathlib import Path

from infbench.fileio import write_jsonl_atomic
from infbench.measure.records import RequestRecord


def write_records(path: str | Path, records: list[RequestRecord]) -> None:
    """The JSONL record of truth, then its Parquet copy (measure/recordframe.py) for fast merges."""
    path = Path(path)
    write_jsonl_atomic(path, (r.to_dict() for r in records))
    try:
        from infbench.measure.recordframe import write_parquet_copy
    except ImportError:  # TGI's native client runs in a venv without polars: no copy, none stale
        path.with_suffix(".parquet").unlink(missing_ok=True)
        return
    write_parquet_copy(path, path.read_bytes(), records)
