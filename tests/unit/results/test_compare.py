"""`infbench compare A B` on runs built with the pipeline's own code: A/A says no difference (a
folder with itself, a bundle with itself), an injected slowdown is found and covered, `--fail-if-worse`
guards against it, a tampered bundle and differing prompts or sampling are refused, and runs with
nothing in common end with exit 2. Also what the report holds (markdown, CSV, HTML, forest plot)."""

from __future__ import annotations

import io
import json
import tarfile

import polars as pl
import pytest
from fake_run import build_run, fake_config
from infbench.cli import main
from infbench.results.bundle_make import make_bundle
from infbench.results.compare import provenance_differences
from infbench.results.redact import Redactor

PROMPTS = 24  # enough prompts for a paired test and the p50s (p99 needs 300 requests)


def _run(tmp_path, name: str, **kwargs):
    root = tmp_path / name
    root.mkdir()
    build_run(root, prompts=PROMPTS, **kwargs)
    return root


def _compare(capsys, *args) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def base(tmp_path):
    return _run(tmp_path, "a")


def test_a_run_against_itself_finds_no_difference(base, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, text, err = _compare(capsys, base, base / "results", "--out", out)
    assert code == 0, err
    rows = pl.read_csv(out / "compare.csv")
    tested = rows.filter(pl.col("p").is_not_null())
    assert tested.height >= 8  # tokens/s and the p50s of the two engines that ran
    assert set(tested["verdict"]) == {"no significant difference"}
    assert set(rows.filter(pl.col("p").is_null())["verdict"]) == {"n/a"}  # p99, one repeat: said, not guessed
    assert "1 repeat: too few for an interval (at least 3)" in text
    assert "Nothing recorded differs" in text and "paired by prompt id" in text
    assert "gamma" not in set(rows["engine"])  # skipped there: not a cell
    assert (out / "forest.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "compare.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    assert err.strip().endswith("(too few prompts, requests or repeats)")


def test_an_injected_10_percent_slowdown_is_found_with_its_interval(base, tmp_path, capsys):
    slower = _run(tmp_path, "b", slow={"beta": 1.10})
    out = tmp_path / "cmp"
    code, _, err = _compare(capsys, base, slower, "--out", out)
    assert code == 0, err
    rows = pl.read_csv(out / "compare.csv").filter(pl.col("scenario") == "single")
    beta = {r["metric"]: r for r in rows.filter(pl.col("engine") == "beta").iter_rows(named=True)}
    for metric in ("TTFT p50", "TPOT p50", "latency p50"):
        assert beta[metric]["verdict"] == "worse", beta[metric]
        assert beta[metric]["change_pct"] == pytest.approx(10.0)
        assert beta[metric]["low_pct"] <= 10.0 + 1e-9 and beta[metric]["high_pct"] >= 10.0 - 1e-9
    assert beta["tokens/s"]["verdict"] == "worse"
    assert beta["tokens/s"]["low_pct"] < -100 / 11 < beta["tokens/s"]["high_pct"]  # 1/1.1 - 1 = -9.09%
    alpha = rows.filter((pl.col("engine") == "alpha") & pl.col("p").is_not_null())
    assert set(alpha["verdict"]) == {"no significant difference"}


def test_fail_if_worse_exits_1_only_beyond_the_threshold(base, tmp_path, capsys):
    slower = _run(tmp_path, "b", slow={"beta": 1.10})
    code, _, err = _compare(capsys, base, slower, "--out", tmp_path / "c1", "--fail-if-worse", "5")
    assert code == 1 and "FAIL: " in err and "beta/tiny/single" in err
    code, _, err = _compare(capsys, base, slower, "--out", tmp_path / "c2", "--fail-if-worse", "15")
    assert code == 0 and "FAIL" not in err
    code, _, _ = _compare(capsys, base, base, "--out", tmp_path / "c3", "--fail-if-worse", "0")
    assert code == 0


def test_a_bundle_against_itself_and_a_tampered_bundle(base, tmp_path, capsys):
    made = make_bundle(base, tmp_path / "bundles", Redactor.from_sources(fake_config()))
    code, text, err = _compare(capsys, made.path, made.path, "--out", tmp_path / "cmp")
    assert code == 0, err
    assert f"run {made.run_id}" in text
    with tarfile.open(made.path, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    name = next(n for n in members if n.endswith("results/raw/alpha/tiny/single.jsonl"))
    members[name] = members[name].replace(b"Paris.", b"Paris!", 1)  # one byte of a raw record
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    code, text, err = _compare(capsys, base, tampered, "--out", tmp_path / "cmp2")
    assert code == 2 and not text
    assert f"{tampered}: the bundle fails verification" in err
    assert "results/raw/alpha/tiny/single.jsonl: checksum mismatch" in err


def _edit_provenance(root, edit) -> None:
    path = root / "results" / "provenance.json"
    provenance = json.loads(path.read_text())
    edit(provenance)
    path.write_text(json.dumps(provenance))


def test_different_prompts_or_sampling_are_refused_unless_asked(base, tmp_path, capsys):
    other = _run(tmp_path, "b")
    _edit_provenance(other, lambda p: p["prompts"][0].update(sha256="0" * 64, seed=8))
    code, text, err = _compare(capsys, base, other, "--out", tmp_path / "cmp")
    assert code == 2 and not text
    assert "refused: the prompt samples differ" in err and "--allow-different-workload" in err
    assert "prompt sample: A prompts: 24 from builtin seed 7" in err
    code, text, err = _compare(capsys, base, other, "--out", tmp_path / "cmp", "--allow-different-workload")
    assert code == 0 and "(not paired)" in text and "Welch t over 24 and 24 prompts" in text

    sampled = _run(tmp_path, "c")
    _edit_provenance(sampled, lambda p: p["config"]["sampling"].update(max_tokens=99))
    code, _, err = _compare(capsys, base, sampled, "--out", tmp_path / "cmp")
    assert code == 2 and "the sampling settings differ" in err and '"max_tokens": 99' in err


def test_runs_with_nothing_in_common_end_with_one_line_and_exit_2(base, tmp_path, capsys):
    other = _run(tmp_path, "b")
    plan_path = other / "results" / "tables" / "merge_plan.json"
    plan = json.loads(plan_path.read_text())
    plan["models"] = {"other": "Other"}
    plan_path.write_text(json.dumps(plan))
    code, text, err = _compare(capsys, base, other, "--out", tmp_path / "cmp")
    assert code == 2 and not text
    assert err.strip().splitlines() == [
        f"{base} and {other} have no (engine, model, scenario) in common: nothing to compare"
    ]


def test_not_a_run_is_named(tmp_path, capsys):
    code, _, err = _compare(capsys, tmp_path / "nowhere", tmp_path / "nowhere", "--out", tmp_path / "cmp")
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such bundle or results folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _compare(capsys, tmp_path / "empty", tmp_path / "empty")
    assert code == 2 and "neither a bundle (.tar.gz) nor a results folder" in err


def test_provenance_differences_name_what_changed(base):
    provenance = json.loads((base / "results" / "provenance.json").read_text())
    other = json.loads(json.dumps(provenance))
    other["git"] = {"commit": "f" * 40, "dirty": True}
    other["engines"][0]["version"] = "9.9.9"
    other["engines"][0]["lock_sha256"] = "x"
    other["engines"][0]["lock"] = ["torch==2.14.0", "transformers==5.23.0"]
    other["models"][0]["files"] = {"model.safetensors": "00"}
    other["hardware"]["cpu_model"] = "Other CPU"
    differences = provenance_differences(provenance, other)
    text = "\n".join(differences.lines)
    for expected in (
        "git commit",
        "(with uncommitted changes)",
        "engine alpha version: A 5.23.0, B 9.9.9",
        "engine alpha lock (transformers.lock): differs in torch",
        "model tiny files: their sha256 differ",
        "hardware cpu_model: A Test CPU, B Other CPU",
    ):
        assert expected in text, text
    assert differences.same_prompts and not differences.refusals
