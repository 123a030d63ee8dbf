"""Start llama.cpp's own HTTP server (the PyPI wheel `xllamacpp`) and keep it running until SIGTERM.

The bench job runs this file by path with the llamacpp venv's python, so it imports nothing from
infbench (the venv has only xllamacpp). Every setting that matters for speed is passed explicitly:
threads (generation and prompt processing), parallel slots, context size, continuous batching, and
the KV cache type (llama.cpp keeps F16 unless told; the bench job asks for the serve dtype's).

  python llamacpp_server.py --model F.gguf --alias NAME --host 127.0.0.1 --port P \
      --threads 2 --parallel 4 --ctx-size 8192
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="the model name the OpenAI route answers to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="threads for generation and prompt processing")
    parser.add_argument("--parallel", type=int, required=True, help="slots: requests decoded together")
    parser.add_argument("--ctx-size", type=int, required=True, help="KV cache tokens, shared by all slots")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="logical batch (n_batch); llama.cpp's default if unset"
    )
    parser.add_argument("--no-cont-batching", action="store_true", help="turn continuous batching off")
    parser.add_argument(
        "--cache-type",
        choices=["f32", "f16", "bf16"],
        default=None,
        help="KV cache type, K and V (llama.cpp's default: f16); the bench job passes the serve dtype's",
    )
    parser.add_argument("--verbosity", type=int, default=None)
    args = parser.parse_args(argv)

    import xllamacpp

    if not os.path.exists(args.model):
        print(f"llama.cpp: no GGUF file at {args.model}", file=sys.stderr)
        return 2
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cont_batching = not args.no_cont_batching
    params.use_jinja = True  # the GGUF's chat template, rendered as the HF engines render it
    params.endpoint_metrics = True
    if args.batch_size:
        params.n_batch = args.batch_size
    if args.cache_type:
        kv_type = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{args.cache_type.upper()}")
        params.cache_type_k = params.cache_type_v = kv_type
    if args.verbosity is not None:
        params.verbosity = args.verbosity
    print(f"llama.cpp (xllamacpp {xllamacpp.__version__}): {xllamacpp.get_system_info()}", flush=True)
    print(
        f"llama.cpp: model {args.model} as {args.alias!r} on {args.host}:{args.port}, threads {args.threads}, "
        f"parallel {args.parallel}, ctx {args.ctx_size}, cont_batching {params.cont_batching}, "
        f"KV cache {args.cache_type or 'f16 (default)'}",
        flush=True,
    )

    def stop(signum, frame):
        # The C++ server's threads go with the process; nothing of ours needs flushing.
        print(f"llama.cpp: signal {signum}, exiting", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = xllamacpp.Server(params)  # starts listening in its own threads
    print(f"llama.cpp: listening at {server.listening_address}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
