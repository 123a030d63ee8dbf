"""results/tablestats.py: a main-table cell's interval text, and which engines of a row are bold."""

from __future__ import annotations

import numpy as np
import pytest
from infbench.results import significance as sig
from infbench.results.tablestats import NO_INTERVAL_MARK, CellSample, cell_text, row_bold

LABELS = {"a": "Alpha", "b": "Beta", "c": "Gamma"}
PROMPTS = tuple(f"p{i}" for i in range(12))


def _prompts(values, marked=()):
    return CellSample(np.asarray(values, dtype=float), "prompts", PROMPTS[: len(values)], tuple(marked))


def _estimates(samples):
    return {e: float(np.mean(s.values)) for e, s in samples.items()}


def test_cell_text_shows_the_interval_or_marks_its_absence():
    sample = _prompts([44.0, 45.0, 46.5, 45.5, 46.0])
    interval = sample.interval
    assert cell_text(45.4, interval) == f"45.40 ±{interval.half_width:.2f}"
    one_repeat = CellSample(np.array([812.4]), "repeats").interval
    assert cell_text(812.4, one_repeat) == f"812.40{NO_INTERVAL_MARK}"
    assert one_repeat.note == "1 repeat: too few for an interval (at least 3)"
    assert cell_text(None, None) == "n/a"


def test_a_clear_winner_is_bold_alone_paired_by_prompt():
    rng = np.random.default_rng(1)
    base = rng.lognormal(3.5, 0.4, 12)  # prompts differ far more than the engines
    samples = {"a": _prompts(base * 1.08), "b": _prompts(base * rng.lognormal(0, 0.01, 12)), "c": _prompts(base * 0.7)}
    verdict = row_bold(_estimates(samples), samples, LABELS)
    assert verdict.bold == ("a",)
    assert verdict.note.startswith("Alpha best: significantly ahead of Beta (paired t over 12 prompts, p=")


def test_engines_within_noise_of_the_best_are_bold_with_it_and_the_p_value_is_given():
    rng = np.random.default_rng(2)
    base = rng.lognormal(3.5, 0.4, 12)
    samples = {"a": _prompts(base * rng.lognormal(0, 0.05, 12)), "b": _prompts(base * rng.lognormal(0, 0.05, 12))}
    estimates = _estimates(samples)
    verdict = row_bold(estimates, samples, LABELS)
    best, other = sorted(samples, key=estimates.get, reverse=True)
    p = sig.compare_means(samples[best].values, samples[other].values, "prompts", True, paired=True).p
    assert set(verdict.bold) == {"a", "b"} and p >= 0.05
    assert (
        verdict.note
        == f"{LABELS[best]} and {LABELS[other]}: not significantly different from the best ({LABELS[other]} p={p:.2g})"
    )


def test_a_marked_best_cell_never_takes_the_bold_alone():
    base = np.linspace(20, 40, 12)
    samples = {"a": _prompts(base * 1.3, marked=("busy",)), "b": _prompts(base * 1.0), "c": _prompts(base * 0.5)}
    verdict = row_bold(_estimates(samples), samples, LABELS)
    assert verdict.bold == ("a", "b")
    assert verdict.note.startswith("Alpha is best but marked (busy): bold beside Beta, not alone")


def test_one_repeat_bolds_nothing_and_says_why():
    samples = {"a": CellSample(np.array([900.0]), "repeats"), "b": CellSample(np.array([450.0]), "repeats")}
    verdict = row_bold({"a": 900.0, "b": 450.0}, samples, LABELS)
    assert verdict.bold == ()
    assert verdict.note == "no engine bold: Alpha against Beta: 1 repeat: too few for an interval (at least 3)"


def test_repeats_are_compared_with_welch_and_a_lone_engine_is_not_bold():
    samples = {
        "a": CellSample(np.array([900.0, 910.0, 905.0]), "repeats"),
        "b": CellSample(np.array([450.0, 460, 455]), "repeats"),
    }
    verdict = row_bold(_estimates(samples), samples, LABELS)
    assert verdict.bold == ("a",) and "Welch t over 3 and 3 repeats" in verdict.note
    assert row_bold({"a": 900.0, "b": None}, samples, LABELS).bold == ()


@pytest.mark.parametrize("higher", [True, False])
def test_direction(higher):
    base = np.linspace(1, 2, 12)
    samples = {"a": _prompts(base * 1.5), "b": _prompts(base)}
    assert row_bold(_estimates(samples), samples, LABELS, higher_is_better=higher).bold == (
        ("a",) if higher else ("b",)
    )
