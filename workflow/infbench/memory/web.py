"""`infbench estimate --web`: the estimator as a local page.

A small Starlette app: GET / is one self-contained page (no external scripts or fonts), POST
/api/estimate answers with the estimate as JSON. The page sends every change of setting, and the
server runs the same code the CLI runs (cli.estimate_from_args) on the same flags, so the page and
`infbench estimate` always agree. A model is picked from the configs under config/models (of the
directory the server runs in), named as the CLI takes it (hub id, directory or config.json), or
uploaded: a config.json, or a model directory, of which the page sends config.json (and
hf_quant_config.json) only. Bad input is answered with its one-line message, shown on the page.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from infbench.memory import quant
from infbench.memory import vllm as vllm_rules
from infbench.memory.errors import EstimateError
from infbench.memory.gpus import CATALOGUE

MODELS_DIR = Path("config/models")
MAX_UPLOAD = 4 * 2**20  # a config.json is kilobytes; anything this big is not one
VERSIONS = ("0.6.5", "0.7.3", "0.8.5", "0.9.2", "0.10.1.1", "0.11.0", "0.21.0", vllm_rules.PINNED_VERSION)


def _require_web() -> tuple[Any, ...]:
    try:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise EstimateError(
            f"--web needs starlette, uvicorn and python-multipart, which {sys.executable} lacks ({exc}); "
            "install them with pip install 'infbench[web]'"
        ) from None
    return uvicorn, Starlette, Request, HTMLResponse, JSONResponse, Route


def _flags(form: dict[str, str]) -> tuple[argparse.Namespace, str]:
    """The CLI's flags from the page's form, and the model to read."""

    def number(key: str, kind: type) -> Any:
        value = (form.get(key) or "").strip()
        if not value or value == "auto":
            return None
        try:
            return kind(value)
        except ValueError:
            raise EstimateError(f"{key.replace('_', ' ')} must be a number, got {value!r}") from None

    model = (form.get("model") or "").strip()
    if not model:
        raise EstimateError("pick a model, name one, or upload its config.json")
    args = argparse.Namespace(
        dtype=None if form.get("dtype") in (None, "", "auto") else form["dtype"],
        kv_dtype=None if form.get("kv_dtype") in (None, "", "auto") else form["kv_dtype"],
        context=number("max_model_len", int),
        batch=1,
        gpu=None if form.get("gpu") in (None, "", "all") else form["gpu"],
        gpu_mem=None,
        bandwidth=None,
        tp=number("tp", int),
        gpu_util=number("gpu_memory_utilization", float),
        vllm_version=(form.get("vllm_version") or vllm_rules.PINNED_VERSION).strip(),
        sampler=None,
        group_size=None,
        cpu_bandwidth=None,
        max_num_seqs=number("max_num_seqs", int),
        max_num_batched_tokens=number("max_num_batched_tokens", int),
        enforce_eager=form.get("enforce_eager") in ("1", "true", "on"),
        disable_custom_all_reduce=form.get("disable_custom_all_reduce") in ("1", "true", "on"),
        model=model,
    )
    return args, model


def _saved_upload(files: list[tuple[str, bytes]], upload_dir: Path) -> str:
    """An uploaded config (a config.json, or a model directory's config files) saved by content;
    the path to read it from, named after the upload."""
    configs = [(n, d) for n, d in files if Path(n).name == "config.json"] or (files if len(files) == 1 else [])
    if not configs:
        names = ", ".join(sorted(Path(n).name for n, _ in files)) or "nothing"
        raise EstimateError(f"the upload holds no config.json (got {names}); upload a model's config.json")
    for name, data in files:
        if len(data) > MAX_UPLOAD:
            raise EstimateError(f"{name} is {len(data) / 2**20:.1f} MiB: not a config file (upload config.json only)")
    rel, data = configs[0]
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EstimateError(f"the uploaded {Path(rel).name} is not JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise EstimateError(f"the uploaded {Path(rel).name} has no model_type: is it a model's config.json?")
    path = Path(rel)
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name if name != "config" else "uploaded")[:80]
    digest = hashlib.sha256(b"".join(d for _, d in sorted(files))).hexdigest()[:16]
    folder = upload_dir / digest / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(data)
    for other, extra in files:
        if Path(other).name == "hf_quant_config.json":
            (folder / "hf_quant_config.json").write_bytes(extra)
    return str(folder)


def _picks() -> list[dict[str, str]]:
    if not MODELS_DIR.is_dir():
        return []
    return [{"name": p.stem, "model": str(p)} for p in sorted(MODELS_DIR.glob("*.json"))]


def estimate_payload(
    form: dict[str, str], files: list[tuple[str, bytes]], upload_dir: Path, cpu_runtimes: dict | None = None
) -> dict[str, Any]:
    """What the page shows for one setting: the estimate's JSON and its answer lines."""
    from infbench.memory.flags import estimate_from_args
    from infbench.memory.render import answer_lines

    if files:
        form = {**form, "model": _saved_upload(files, upload_dir)}
    args, model = _flags(form)
    args.cpu_runtimes = cpu_runtimes  # each engine kind's CPU memory, as the CLI has it
    est = estimate_from_args(args, model)
    out = est.to_json()
    out["answer"] = answer_lines(est)
    if files:
        out["source"] = "uploaded config.json"
    return out


def create_app(upload_dir: Path | None = None, cpu_runtimes: dict | None = None):
    uvicorn, Starlette, Request, HTMLResponse, JSONResponse, Route = _require_web()
    uploads = upload_dir or Path(tempfile.mkdtemp(prefix="infbench-web-"))

    async def page(request: Request):
        return HTMLResponse(_page().replace("__SETUP__", json.dumps(_setup())))

    async def api_estimate(request: Request):
        try:
            form = await request.form(max_part_size=MAX_UPLOAD)
        except Exception as exc:  # a malformed or oversized multipart body
            return JSONResponse({"error": f"could not read the request: {exc}"}, status_code=400)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        files = [(v.filename or "config.json", await v.read()) for _, v in form.multi_items() if not isinstance(v, str)]
        try:
            return JSONResponse(estimate_payload(fields, files, uploads, cpu_runtimes))
        except EstimateError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(routes=[Route("/", page), Route("/api/estimate", api_estimate, methods=["POST"])])


def _page() -> str:
    # The page is package data (infbench/data/estimate.html): HTML, CSS and script in one file.
    return (Path(__file__).resolve().parent.parent / "data" / "estimate.html").read_text()


def _setup() -> dict[str, Any]:
    return {
        "models": _picks(),
        "gpus": [{"name": g.name, "gib": round(g.memory_bytes / 2**30, 2)} for g in CATALOGUE],
        "schemes": [{"name": n, "label": s.label} for n, s in quant.SCHEMES.items()],
        "kv_dtypes": list(quant.KV_DTYPE_BYTES),
        "versions": list(VERSIONS),
        "pinned": vllm_rules.PINNED_VERSION,
    }


def serve(host: str = "127.0.0.1", port: int = 8765, cpu_runtimes: dict | None = None) -> int:
    """Serve the page until interrupted; prints the address first (port 0: any free port)."""
    import socket

    uvicorn = _require_web()[0]
    app = create_app(cpu_runtimes=cpu_runtimes)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"infbench estimate: error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    bound = sock.getsockname()[1]
    print(f"infbench estimate: serving on http://{host}:{bound}/ (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0
