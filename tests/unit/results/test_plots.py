"""Plots and report pages from real-shaped records: non-empty PNGs, reproducible, skipped engines shown."""

from __future__ import annotations

import json

from fake_run import build_run
from infbench.handoff import MergePlan
from infbench.results.plots import PLOT_FILES, PlotData, write_plots
from infbench.results.reportpages import markdown_page, write_pages

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_are_non_empty_pngs_and_reproducible(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    run = build_run(root)
    out = root / "results" / "plots"
    paths = write_plots(root / "results" / "raw", run["plan"], out)
    assert [p.name for p in paths] == list(PLOT_FILES)
    first = {}
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path
        first[path.name] = data
    write_plots(root / "results" / "raw", run["plan"], out)
    assert {p.name: p.read_bytes() for p in paths} == first  # no timestamps in the files


def test_plot_data_matches_the_summary_and_knows_skipped_engines(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    run = build_run(root)
    data = PlotData.load(root / "results" / "raw", run["plan"])
    assert data.skipped == {("gamma", "tiny"): "n/a: no TGI launcher"}
    assert data.value("gamma", "tiny", "single", "tokens_per_s_mean") is None
    csv = (root / "results" / "tables" / "summary.csv").read_text().splitlines()
    header = csv[0].split(",")
    beta_single = next(line.split(",") for line in csv[1:] if line.startswith("beta,tiny,single,"))
    expected = float(beta_single[header.index("tokens_per_s_mean")])
    assert abs(data.value("beta", "tiny", "single", "tokens_per_s_mean") - expected) < 1e-9
    assert data.all_scenarios() == ["single", "throughput", "native-single"]


def test_plots_without_any_successful_request(tmp_path):
    from infbench.fileio import write_json_atomic
    from infbench.measure.recordfiles import write_records

    raw = tmp_path / "raw"
    write_records(raw / "e" / "m" / "single.jsonl", [])
    write_json_atomic(raw / "e" / "m" / "server.json", {"status": "skipped", "reason": "n/a: nothing here"})
    plan = MergePlan(engines={"e": "E"}, models={"m": "M"}, scenarios={"single": "single"})
    for path in write_plots(raw, plan, tmp_path / "plots"):
        assert path.read_bytes().startswith(PNG)


def test_report_pages_render_tables_and_provenance(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    run = build_run(root)
    tables = [root / "results" / "tables" / f"{n}.md" for n in ("inference_speed", "throughput", "details")]
    pages = write_pages(tables, root / "results" / "provenance.json", root / "results" / "report")
    assert [p.name for p in pages] == ["inference_speed.html", "throughput.html", "details.html", "provenance.html"]
    speed = pages[0].read_text()
    assert "<table>" in speed and "<th>Beta</th>" in speed and "<strong>" in speed
    prov = pages[-1].read_text()
    assert run["provenance"].run_id in prov and "Test CPU" in prov and "transformers==5.23.0" in prov
    assert json.loads((root / "results" / "provenance.json").read_text())["run_id"] in prov


def test_markdown_html_is_escaped():
    html = markdown_page("t", "a | b\n--- | ---\n<script>x</script> | 1\n")
    assert "<script>" not in html and "&lt;script&gt;" in html
