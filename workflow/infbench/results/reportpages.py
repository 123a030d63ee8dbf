"""HTML pages for the Snakemake report: each table rendered from its markdown, and the provenance.

The report (`snakemake --report results/report.html`) shows HTML inline but offers markdown and JSON
only as downloads, so the `report_pages` rule renders results/report/*.html from the tables and
results/provenance.json. Everything user-supplied is escaped; the pages load nothing from outside.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

from infbench.fileio import write_text_atomic
from infbench.results.provenance import TIME_MEANINGS, read_provenance

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.85em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
.muted { color: #666; }
"""


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def markdown_page(title: str, markdown: str) -> str:
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a table is shown as text
    return page(title, renderer.render(markdown))


def _e(value: Any) -> str:
    return html.escape("n/a" if value is None else str(value))


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs) + "</table>"


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.1f} GiB"


def provenance_page(prov: dict[str, Any]) -> str:
    times, git, hw, sw = prov["times"], prov["git"], prov["hardware"], prov["software"]
    parts = [
        f"<h1>Provenance of run {_e(prov['run_id'])}</h1>",
        '<p class="muted">From results/provenance.json. Secrets in the config are redacted.</p>',
        "<h2>Run</h2>",
        _rows(
            [
                ("run id", prov["run_id"]),
                ("results sha256", prov["results_sha256"]),
                ("git commit", git["commit"]),
                ("git branch", git.get("branch")),
                ("uncommitted changes (dirty)", git["dirty"]),
            ]
        ),
        "<h2>Times (UTC unless an offset is given)</h2>",
        "<table><tr><th>time</th><th>value</th><th>meaning</th></tr>"
        + "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(times.get(k))}</td><td>{_e(times['meaning'].get(k, v))}</td></tr>"
            for k, v in TIME_MEANINGS.items()
        )
        + "</table>",
        "<h2>Hardware</h2>",
        _rows(
            [
                ("CPU", hw["cpu_model"]),
                ("cores (logical / physical)", f"{hw['cpu_cores_logical']} / {hw['cpu_cores_physical']}"),
                ("RAM", _gib(hw["ram_bytes"])),
                (
                    "GPUs",
                    "; ".join(f"{g['index']}: {g['name']} ({_gib(g['memory_total_bytes'])})" for g in hw["gpus"])
                    or "none found",
                ),
                ("GPU driver", hw["gpu_driver"]),
                ("CUDA (driver)", hw["cuda_version"]),
                ("GPU facts from", hw["gpu_source"]),
                ("note", hw["note"]),
            ]
        ),
        "<h2>Software</h2>",
        _rows(
            [
                ("Python", sw["python"]),
                ("Snakemake", sw["snakemake"]),
                ("infbench", sw["infbench"]),
                ("platform", sw["platform"]),
            ]
        ),
        "<h2>Engines</h2>",
    ]
    for engine in prov["engines"]:
        commands = "".join(
            f"<li>{_e(model)}: <code>{_e(' '.join(cmd) or 'not run')}</code></li>"
            for model, cmd in engine["server_commands"].items()
        )
        parts += [
            f"<h3>{_e(engine['label'])} ({_e(engine['name'])})</h3>",
            _rows(
                [
                    ("kind", engine["kind"]),
                    ("version", engine["version"]),
                    ("environment", engine["env"]),
                    ("lock file", engine["lock_file"]),
                    ("lock sha256", engine["lock_sha256"]),
                ]
            ),
            f"<p>Server commands:</p><ul>{commands or '<li>none</li>'}</ul>",
            f"<details><summary>lock ({len(engine['lock'])} packages)</summary>"
            f"<pre>{_e(chr(10).join(engine['lock']))}</pre></details>",
        ]
    parts.append("<h2>Models</h2>")
    for model in prov["models"]:
        files = "".join(f"<tr><td>{_e(f)}</td><td><code>{_e(h)}</code></td></tr>" for f, h in model["files"].items())
        parts += [
            f"<h3>{_e(model['name'])}</h3>",
            _rows(
                [
                    ("source", model["source"]),
                    ("dtype", model["dtype"]),
                    ("size", f"{model['size_bytes'] / 1e6:.1f} MB"),
                ]
            ),
            f"<table><tr><th>file</th><th>sha256</th></tr>{files}</table>",
        ]
    parts.append("<h2>Prompts</h2>")
    for prompts in prov["prompts"]:
        parts.append(
            _rows(
                [
                    ("sample", prompts["name"]),
                    ("source", prompts["source"]),
                    ("count", prompts["count"]),
                    ("seed", prompts["seed"]),
                    ("sha256", prompts["sha256"]),
                ]
            )
        )
    parts += ["<h2>Resolved config</h2>", f"<pre>{_e(yaml.safe_dump(prov['config'], sort_keys=False))}</pre>"]
    return page(f"Provenance {prov['run_id']}", "\n".join(parts))


def write_pages(tables: list[Path], provenance: Path, out_dir: Path) -> list[Path]:
    """results/report/{table}.html for each table, and results/report/provenance.html."""
    written = []
    for table in tables:
        target = out_dir / f"{Path(table).stem}.html"
        write_text_atomic(target, markdown_page(Path(table).stem, Path(table).read_text()))
        written.append(target)
    target = out_dir / "provenance.html"
    write_text_atomic(target, provenance_page(read_provenance(provenance)))
    written.append(target)
    return written
