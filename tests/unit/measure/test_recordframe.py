"""Raw records as frames: the JSONL record of truth, its Parquet copy, and when the merge trusts it."""

from __future__ import annotations

import os
import shutil
from dataclasses import fields

import polars as pl
import pytest
from conftest import DATA
from infbench.fileio import write_bytes_atomic
from infbench.handoff import MergePlan
from infbench.measure.recordfiles import write_records
from infbench.measure.recordframe import (
    RECORD_SCHEMA,
    copy_disagreement,
    parquet_copy_of,
    parquet_path,
    read_jsonl_frame,
    read_runs,
    records_frame,
    usable_copy,
)
from infbench.measure.records import RequestRecord, read_records
from infbench.results.tables import merge

GOLDEN = DATA / "merge_golden" / "natural"


def rec(i: int, tokens: int = 5, **extra) -> RequestRecord:
    fields_ = dict(
        request_id=f"r{i}",
        prompt_id=f"p{i}",
        engine="e",
        model="m",
        scenario="s",
        concurrency=1,
        send_time=1.8e9 + i,
        ttft_s=0.1,
        latency_s=0.5 + i / 7,
        chunk_times_s=[0.1, 0.2, 0.35],
        chunk_tokens=[1, 2, 2],
        completion_tokens=tokens,
        status=200,
    )
    return RequestRecord(**{**fields_, **extra})


def test_schema_names_every_record_field():
    assert list(RECORD_SCHEMA) == [f.name for f in fields(RequestRecord)]


def test_bench_writes_a_parquet_copy_the_merge_reads(tmp_path):
    path = tmp_path / "single.jsonl"
    records = [rec(0), rec(1, error="HTTP 500", status=500), rec(2, output_text="naïve ✓")]
    write_records(path, records)
    assert usable_copy(path) == parquet_path(path)
    from_jsonl, from_copy = read_jsonl_frame(path), pl.read_parquet(parquet_path(path))
    assert from_jsonl.equals(from_copy, null_equal=True)
    assert from_jsonl.equals(records_frame(records), null_equal=True)
    assert copy_disagreement(path) is None
    assert read_records(path) == records  # the JSONL itself is unchanged


def test_an_edited_jsonl_is_read_instead_of_its_stale_copy(tmp_path):
    path = tmp_path / "single.jsonl"
    write_records(path, [rec(0), rec(1)])
    text = path.read_text().replace('"completion_tokens":5', '"completion_tokens":500', 1)
    path.write_text(text)  # by hand: newer and of another size than the copy's JSONL
    assert usable_copy(path) is None
    assert read_runs([path], ["completion_tokens"], "run")["completion_tokens"].to_list() == [500, 5]
    assert "not made from this single.jsonl" in copy_disagreement(path)


def test_a_copy_with_other_records_is_caught_even_with_a_matching_stamp(tmp_path):
    path = tmp_path / "single.jsonl"
    write_records(path, [rec(0), rec(1)])
    other = tmp_path / "other.jsonl"
    write_records(other, [rec(0, tokens=99), rec(1)])
    # The other file's records under this file's stamp: only a comparison of records sees it.
    forged = parquet_copy_of(other.read_bytes(), "other.jsonl")
    stamp_source = path.read_bytes()
    frame = pl.read_parquet(forged)
    from infbench.measure.recordframe import _parquet_bytes

    write_bytes_atomic(parquet_path(path), _parquet_bytes(frame, stamp_source))
    assert "holds other records than single.jsonl" in copy_disagreement(path)


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "single.jsonl"
    write_records(path, [rec(0)])
    parquet_path(path).unlink()
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"single.jsonl, line 2: invalid JSON"):
        read_runs([path], list(RECORD_SCHEMA), "run")
    path.write_text('{"request_id": "r0", "engine": "e"}\n')
    with pytest.raises(ValueError, match=r"single.jsonl, record 1: no 'prompt_id'"):
        read_runs([path], list(RECORD_SCHEMA), "run")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_runs([tmp_path / "missing.jsonl"], list(RECORD_SCHEMA), "run")


def test_empty_file_is_no_records(tmp_path):
    path = tmp_path / "single.jsonl"
    write_records(path, [])
    assert read_runs([path], list(RECORD_SCHEMA), "run").height == 0
    assert read_jsonl_frame(path).schema == pl.Schema(RECORD_SCHEMA)


def test_runs_are_read_in_order_from_copies_and_jsonl_alike_and_an_old_copy_is_passed_over(tmp_path):
    """Several files at once, each record under its file's position, in the files' order: whether a
    file has a usable copy, none, or a copy without today's columns (written by an older infbench)."""
    paths = [tmp_path / f"{name}.jsonl" for name in ("a", "b", "c")]
    for position, path in enumerate(paths):
        write_records(path, [rec(position * 10 + i, tokens=position * 10 + i + 2) for i in range(2)])
    parquet_path(paths[1]).unlink()
    old = pl.read_parquet(parquet_path(paths[2])).drop("slo_tpot_s")  # an older schema, same stamp
    from infbench.measure.recordframe import _parquet_bytes

    write_bytes_atomic(parquet_path(paths[2]), _parquet_bytes(old, paths[2].read_bytes()))
    assert usable_copy(paths[0]) and usable_copy(paths[1]) is None and usable_copy(paths[2]) is None
    frame = read_runs(paths, ["request_id", "completion_tokens"], "run")
    assert frame.rows() == [("r0", 2, 0), ("r1", 3, 0), ("r10", 12, 1), ("r11", 13, 1), ("r20", 22, 2), ("r21", 23, 2)]


def test_merge_from_parquet_copies_writes_the_frozen_tables(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(GOLDEN / "raw", raw)
    for jsonl in raw.rglob("*.jsonl"):
        write_bytes_atomic(parquet_path(jsonl), parquet_copy_of(jsonl.read_bytes(), str(jsonl)))
        os.utime(jsonl, ns=(1, 1))  # copies are newer: they are what the merge reads
        assert usable_copy(jsonl)
    merge(raw, tmp_path / "tables", MergePlan.from_json((GOLDEN / "plan.json").read_text()))
    for table in ("inference_speed.md", "throughput.md", "details.md", "summary.csv"):
        assert (tmp_path / "tables" / table).read_bytes() == (GOLDEN / "tables" / table).read_bytes(), table
