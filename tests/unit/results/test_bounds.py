"""The decode speed bound set beside measured single-request tokens/s (results/bounds.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infbench.handoff import Bandwidth, MemoryEstimate, MemoryReport
from infbench.results.bounds import BoundFiles, NoBound, bound_cells, bounds_for_run, decode_bound, mean_context

ESTIMATE = {  # the fields of results/memory/{model}.json the bound reads
    "dtype": "fp32",
    "kv_dtype": "fp32",
    "weights_bytes": {"fp32": 4 * 10**8, "bf16": 2 * 10**8},
    "kv_cache": {"bytes_per_token": {"fp32": 1000, "bf16": 500}},
}


def typed(**changes) -> MemoryEstimate:
    """ESTIMATE as the bound reads it (changes: top-level fields replaced)."""
    return MemoryEstimate.from_dict({**ESTIMATE, **changes})


TYPED = typed()


def report(memory: dict) -> MemoryReport:
    """A run's memory.json as the bound reads it (GPUs with the fields every real file has)."""
    gpus = [{"index": i, "total_bytes": 0, **g} for i, g in enumerate(memory.get("gpus", []))]
    return MemoryReport.from_dict({"engine": "t", "model": "m", **memory, "gpus": gpus})


def test_cpu_bound_uses_the_measured_bandwidth():
    memory = {"device": "cpu", "gpus": []}
    bound = decode_bound("transformers", "m", TYPED, report(memory), Bandwidth(8e9, load_1min=3.5), context_tokens=1000)
    assert bound.bytes_per_token == 4 * 10**8 + 1000 * 1000
    assert bound.tokens_s == pytest.approx(8e9 / (4 * 10**8 + 10**6))
    assert "measured read benchmark" in bound.bandwidth_source and "3.5" in bound.bandwidth_source
    # vLLM logged that it computed in bf16: the bound reads bf16 weights and KV.
    vllm = decode_bound(
        "vllm",
        "m",
        TYPED,
        report({**memory, "engine_reported": {"dtype": "bfloat16"}}),
        Bandwidth(8e9),
        context_tokens=0,
    )
    assert vllm.dtype == "bf16" and vllm.bytes_per_token == 2 * 10**8
    assert decode_bound("t", "m", TYPED, report(memory), None, 10) is None  # not measured: no bound


def test_gpu_bound_uses_the_catalogue_and_splits_over_ranks():
    memory = {"device": "cuda", "gpus": [{"name": "NVIDIA H100 80GB HBM3"}, {"name": "NVIDIA H100 80GB HBM3"}]}
    bound = decode_bound("vllm", "m", TYPED, report(memory), None, context_tokens=0)
    assert bound.tokens_s == pytest.approx(3.35e12 / (4 * 10**8 / 2))
    assert "H100-80GB datasheet" in bound.bandwidth_source


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ({"name": "NVIDIA L4"}, "L4-24GB datasheet"),
        ({"name": "NVIDIA L40S"}, "L40S-48GB datasheet"),
        ({"name": "NVIDIA L40"}, "L40-48GB datasheet"),  # its own entry: not the L40S, not the L4
        ({"name": "NVIDIA H100 PCIe"}, "H100-PCIe-80GB datasheet"),  # not the SXM's 3.35 TB/s
        ({"name": "NVIDIA H100 NVL 2"}, "n/a: unknown GPU NVIDIA H100 NVL 2"),  # no near miss
        ({"name": ""}, "n/a: unknown GPU (no name)"),  # an empty name matched everything before
        ({"name": "H100 renamed by a driver", "pci_device_id": 0x2330}, "H100-80GB datasheet"),
        ({"name": "", "pci_device_id": 0x26B5}, "n/a: unknown GPU (no name)"),  # the L40's id
    ],
)
def test_gpus_are_matched_exactly_by_nvml_name_or_pci_id(gpu, expected):
    memory = {"device": "cuda", "gpus": [gpu]}
    bound = decode_bound("vllm", "m", TYPED, report(memory), Bandwidth(8e9), context_tokens=0)
    if expected.startswith("n/a"):
        assert isinstance(bound, NoBound) and bound.reason == expected
        assert bound_cells(bound, 50.0) == (expected, "-")
    else:
        assert expected in bound.bandwidth_source


def test_a_cuda_run_without_gpus_is_never_bounded_by_the_host_ram():
    """NVML could not be read: no GPU in memory.json. The CPU's bandwidth would make a GPU's figure
    look like thousands of percent of its bound."""
    bound = decode_bound("vllm", "m", TYPED, report({"device": "cuda", "gpus": []}), Bandwidth(8e9), 0)
    assert isinstance(bound, NoBound) and "no GPU recorded" in bound.reason


def test_an_external_endpoint_has_no_bound_unless_its_config_gives_the_bandwidth():
    external = {"device": "cpu", "status": "skipped", "reason": "external endpoint: memory not measured"}
    bound = decode_bound("remote", "m", TYPED, report(external), Bandwidth(8e9), 0)
    assert isinstance(bound, NoBound) and bound.reason.startswith("n/a: external endpoint")
    given = decode_bound("remote", "m", TYPED, report({**external, "bandwidth_bytes_s": 2e12}), None, 0)
    assert given.tokens_s == pytest.approx(2e12 / (4 * 10**8)) and given.bandwidth_source == "from the config"


def test_an_untied_input_embedding_is_read_one_row_per_token():
    """Untied: the input embedding is looked up (one row), the output layer read whole. Tied: the one
    matrix is the output layer, so all of it counts."""
    parameters = {"total": 10**8, "tied_embeddings": False, "by_role": {"embedding": 10**7, "lm_head": 10**7}}
    untied = decode_bound("t", "m", typed(parameters=parameters), report({"device": "cpu"}), Bandwidth(8e9), 0)
    assert untied.bytes_per_token == 4 * 10**8 - 4 * 10**7
    tied = {**parameters, "tied_embeddings": True, "by_role": {"embedding": 10**7, "lm_head": 0}}
    whole = decode_bound("t", "m", typed(parameters=tied), report({"device": "cpu"}), Bandwidth(8e9), 0)
    assert whole.bytes_per_token == 4 * 10**8


def test_cells_flag_a_figure_above_its_bound():
    bound = decode_bound("t", "m", TYPED, report({"device": "cpu"}), Bandwidth(4e9), 0)
    assert bound.tokens_s == pytest.approx(10.0)
    assert bound_cells(bound, 5.0) == ("10.0", "50%")
    assert bound_cells(bound, 12.0) == ("10.0", "120% ⚠ over bound")
    assert bound_cells(None, 5.0) == ("-", "-")


def _write_pipeline_files(results: Path) -> None:
    """What the merge reads for a bound: the model's estimate, the run's memory.json, the bandwidth."""
    (results / "memory").mkdir()
    (results / "memory" / "m.json").write_text(json.dumps(ESTIMATE))
    (results / "raw" / "t" / "m").mkdir(parents=True)
    (results / "raw" / "t" / "m" / "memory.json").write_text(json.dumps({"device": "cpu"}))
    (results / "hardware").mkdir()
    (results / "hardware" / "bandwidth.json").write_text(json.dumps({"bandwidth_bytes_s": 4e9}))


def test_bounds_for_run_reads_the_pipeline_files(tmp_path):
    tmp_path = tmp_path / "results"
    tmp_path.mkdir()
    _write_pipeline_files(tmp_path)
    records = [{"prompt_tokens": 100, "completion_tokens": 50}, {"prompt_tokens": 300, "completion_tokens": 0}]
    assert mean_context(records) == 125  # failed or empty replies do not count
    files = BoundFiles.under(tmp_path.parent, ["t", "other"], ["m"])
    bound = bounds_for_run(files, "t", "m", records)
    assert bound.context_tokens == 125 and bound.bytes_per_token == 4 * 10**8 + 125 * 1000
    assert bounds_for_run(files, "other", "m", records) is None
    # The merge rule's lists name the same files.
    listed = BoundFiles.listed(
        [tmp_path / "memory" / "m.json"], [tmp_path / "raw" / "t" / "m" / "memory.json"], files.bandwidth
    )
    assert bounds_for_run(listed, "t", "m", records) == bound


def test_with_bounds_adds_columns_to_single_scenarios_only(tmp_path):
    import polars as pl
    from infbench.results.bounds import with_bounds

    tmp_path = tmp_path / "results"
    tmp_path.mkdir()
    _write_pipeline_files(tmp_path)
    df = pl.DataFrame(
        {
            "engine": ["t", "t"],
            "model": ["m", "m"],
            "scenario": ["single", "load"],
            "tokens_per_s_mean": [5.0, 50.0],
            "prompt_tokens_mean": [0.0, 0.0],
            "completion_tokens_mean": [0.0, 0.0],
        }
    )
    files = BoundFiles.under(tmp_path.parent, ["t"], ["m"])
    out = with_bounds(df, files, {"single": "single", "load": "throughput"})
    assert out["decode_bound_tokens_s"].to_list() == [pytest.approx(10.0), None]
    assert out["pct_of_bound"].to_list() == [pytest.approx(50.0), None]


def test_details_and_csv_show_bound_and_flag_over_100(tmp_path):
    """The merge sets each single-request tok/s beside its bound; a bundle still verifies."""
    from fake_run import build_run, fake_config
    from infbench.fileio import write_json_atomic
    from infbench.results.bundle_make import make_bundle
    from infbench.results.bundle_verify import verify_bundle
    from infbench.results.redact import Redactor
    from infbench.results.tables import merge

    run = build_run(tmp_path)
    results = tmp_path / "results"
    write_json_atomic(results / "memory" / "tiny.json", ESTIMATE)
    # A bound of 25 tok/s at the fake run's context (prompt ~21 + half of 8 completion tokens):
    # alpha's single run (20 tok/s) sits under it, beta's (30 tok/s) above.
    context = 21 + 8 / 2
    write_json_atomic(
        results / "hardware" / "bandwidth.json",
        {
            "bandwidth_bytes_s": 25 * (4 * 10**8 + 1000 * context),
            "load_1min": 1.0,
            "bound_method": "read",
            "quiet": False,
        },
    )
    plan = run["plan"]
    merge(results / "raw", results / "tables", plan, BoundFiles.under(tmp_path, plan.engines, plan.models))
    details = (results / "tables" / "details.md").read_text()
    assert "| bound tok/s | % of bound |" in details
    assert "⚠ over bound" in details and "WARNING: beta/tiny/single" in details
    assert "WARNING: alpha" not in details
    # Measured while others used the machine: said under the table, not hidden.
    assert (
        "- WARNING: bandwidth behind the bound: measured read method, 1-min load 1.0; the machine was NOT quiet"
        in details
    )
    header = (results / "tables" / "summary.csv").read_text().splitlines()[0]
    assert "decode_bound_tokens_s" in header and "pct_of_bound" in header
    made = make_bundle(tmp_path, results / "bundles", Redactor.from_sources(fake_config()))
    checked = verify_bundle(made.path)
    assert checked.ok, checked.problems
