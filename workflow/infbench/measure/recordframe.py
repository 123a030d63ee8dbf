"""Raw records as polars frames: their schema, the JSONL record of truth, and its Parquet copy.

results/raw/{engine}/{model}/{scenario}.jsonl is what a bench job measured, one RequestRecord per
line; it is the human-readable record and what bundles carry as the source of truth. Beside it the
bench job writes {scenario}.parquet, the same records in columns, because parsing JSON is most of a
large merge's time. The copy stores the JSONL's size and sha256; the merge reads the copy only when
that size matches and the copy is not older than the JSONL (else the JSONL: a hand-edited or copied
file is never shadowed by a stale copy), and `infbench verify` checks that both hold the same records.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import MISSING, fields
from pathlib import Path

import polars as pl

from infbench.fileio import read_jsonl, write_bytes_atomic
from infbench.measure.records import RequestRecord

# One polars type per RequestRecord field (tests/unit/measure/test_recordframe.py checks both list the same names).
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "prompt_id": pl.String(),
    "engine": pl.String(),
    "model": pl.String(),
    "scenario": pl.String(),
    "concurrency": pl.Int64(),
    "send_time": pl.Float64(),
    "ttft_s": pl.Float64(),
    "latency_s": pl.Float64(),
    "response_end_s": pl.Float64(),
    "chunk_times_s": pl.List(pl.Float64()),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cached_prompt_tokens": pl.Int64(),
    "cache": pl.String(),
    "tokens_counted_by": pl.String(),
    "chunk_tokens": pl.List(pl.Int64()),
    "chunk_tokens_counted_by": pl.String(),
    "send_mono": pl.Float64(),
    "dispatch_lag_s": pl.Float64(),
    "connect_s": pl.Float64(),
    "read_lag_p99_s": pl.Float64(),
    "read_lag_max_s": pl.Float64(),
    "client_lag_share_limit": pl.Float64(),
    "worker": pl.Int64(),
    "rate": pl.Float64(),
    "offered_rate": pl.Float64(),
    "achieved_rate": pl.Float64(),
    "saturated": pl.Boolean(),
    "slo": pl.String(),
    "step_passed": pl.Boolean(),
    "slo_ttft_s": pl.Float64(),
    "slo_tpot_s": pl.Float64(),
    "max_tokens": pl.Int64(),
    "output_length": pl.String(),
    "planned_prompt_tokens": pl.Int64(),
    "conversation": pl.String(),
    "turn": pl.Int64(),
    "finish_reason": pl.String(),
    "status": pl.Int64(),
    "error": pl.String(),
    "output_text": pl.String(),
}
# A record that leaves out a field gets the dataclass default, as RequestRecord.from_dict gives it.
_DEFAULTS = {f.name: f.default for f in fields(RequestRecord) if f.default not in (None, MISSING)}
_REQUIRED = [f.name for f in fields(RequestRecord) if f.default is MISSING and f.default_factory is MISSING]
PARQUET_KEY = "infbench.jsonl"  # Parquet key-value metadata: {"size": bytes, "sha256": hex} of the JSONL


def records_frame(records: list[RequestRecord]) -> pl.DataFrame:
    """In-memory records (a bench job's, calibrate's) as a frame of RECORD_SCHEMA."""
    return pl.DataFrame([r.to_dict() for r in records], schema=RECORD_SCHEMA)


def parquet_path(jsonl: Path) -> Path:
    return jsonl.with_suffix(".parquet")


def _parquet_bytes(frame: pl.DataFrame, jsonl_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    stamp = json.dumps({"size": len(jsonl_bytes), "sha256": hashlib.sha256(jsonl_bytes).hexdigest()})
    # lz4: decodes faster than the default zstd (the merge's reading time), for ~10% more bytes.
    frame.write_parquet(buffer, compression="lz4", metadata={PARQUET_KEY: stamp})
    return buffer.getvalue()


def write_parquet_copy(jsonl: Path, jsonl_bytes: bytes, records: list[RequestRecord]) -> None:
    """The Parquet copy of a JSONL file just written from `records` (atomic, like the JSONL)."""
    write_bytes_atomic(parquet_path(jsonl), _parquet_bytes(records_frame(records), jsonl_bytes))


def parquet_copy_of(jsonl_bytes: bytes, name: str) -> bytes:
    """A Parquet copy made from JSONL bytes (a bundle's copies are made from its redacted JSONL)."""
    frame = _parse(lambda: pl.scan_ndjson(io.BytesIO(jsonl_bytes), schema=RECORD_SCHEMA), name)
    return _parquet_bytes(frame, jsonl_bytes)


def parquet_stamp(parquet: Path) -> dict | None:
    try:
        return json.loads(pl.read_parquet_metadata(parquet)[PARQUET_KEY])
    except (KeyError, ValueError, OSError, pl.exceptions.PolarsError):
        return None


def usable_copy(jsonl: Path) -> Path | None:
    """The Parquet copy when it was made from this JSONL (same size, not older) with today's
    RECORD_SCHEMA (not by an older infbench), else None."""
    copy = parquet_path(jsonl)
    if not copy.exists():
        return None
    stamp = parquet_stamp(copy)
    stat = jsonl.stat()
    if stamp is None or stamp.get("size") != stat.st_size or copy.stat().st_mtime_ns < stat.st_mtime_ns:
        return None
    if pl.read_parquet_schema(copy) != RECORD_SCHEMA:
        return None
    return copy


def _complete(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(pl.col(name).fill_null(value) for name, value in _DEFAULTS.items()).with_columns(
        pl.col("chunk_times_s").fill_null([]), pl.col("chunk_tokens").fill_null([])
    )


def read_jsonl_frame(jsonl: Path) -> pl.DataFrame:
    """A raw JSONL file as a frame; a bad line or value raises ValueError naming the file (and line)."""
    if not jsonl.exists():
        raise FileNotFoundError(f"No such file or directory: '{jsonl}'")
    return _parse(lambda: pl.scan_ndjson(jsonl, schema=RECORD_SCHEMA), str(jsonl), lambda: read_jsonl(jsonl))


def _parse(scan, name: str, find_bad_line=None) -> pl.DataFrame:
    try:
        frame = _complete(scan()).collect()
    except pl.exceptions.PolarsError as err:
        if find_bad_line:
            find_bad_line()  # raises "FILE, line N: invalid JSON (...)" when a line is not JSON
        raise ValueError(f"{name}: not a raw record file ({str(err).splitlines()[0]})") from None
    _check_required(frame, name)
    return frame


def _check_required(frame: pl.DataFrame, source: str) -> None:
    for name in _REQUIRED:
        missing = frame.select(pl.col(name).is_null().arg_max()).item() if frame[name].null_count() else None
        if missing is not None:
            raise ValueError(f"{source}, record {missing + 1}: no {name!r}")


def read_runs(jsonls: list[Path], columns: list[str], index: str) -> pl.DataFrame:
    """The records of several raw files, only `columns`, each with `index` = its file's position in
    `jsonls`, in that order. Files with a usable Parquet copy are scanned together (polars reads them
    in parallel and decodes only `columns`); the others are parsed from their JSONL."""
    copies = {
        str(copy): position
        for position, jsonl in enumerate(jsonls)
        if jsonl.exists() and (copy := usable_copy(jsonl)) is not None
    }
    parts = []
    if copies:
        scan = pl.scan_parquet(list(copies), include_file_paths="_file")
        parts.append(
            scan.select(*columns, pl.col("_file").replace_strict(copies, return_dtype=pl.Int32).alias(index)).collect()
        )
    from_copies = set(copies.values())
    for position, jsonl in enumerate(jsonls):
        if position not in from_copies:
            parts.append(read_jsonl_frame(jsonl).select(*columns, pl.lit(position, pl.Int32).alias(index)))
    if not parts:
        return pl.DataFrame(schema={**{c: RECORD_SCHEMA[c] for c in columns}, index: pl.Int32})
    frame = pl.concat(parts)
    return frame if len(parts) == 1 else frame.sort(index, maintain_order=True)


def copy_disagreement(jsonl: Path) -> str | None:
    """Why a JSONL file and its Parquet copy disagree (None when they agree or there is no copy)."""
    copy = parquet_path(jsonl)
    if not copy.exists():
        return None
    stamp = parquet_stamp(copy)
    data = jsonl.read_bytes()
    if stamp != {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}:
        return f"{copy.name} was not made from this {jsonl.name} (its size and sha256 differ)"
    try:
        ours, theirs = read_jsonl_frame(jsonl), pl.read_parquet(copy)
    except (ValueError, OSError, pl.exceptions.PolarsError) as err:
        return f"cannot compare with {copy.name} ({err})"
    if ours.schema != theirs.schema or not ours.equals(theirs, null_equal=True):
        return f"{copy.name} holds other records than {jsonl.name}"
    return None
