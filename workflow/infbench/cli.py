"""The `infbench` command: the steps the Snakemake rules run, and tools for users."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from infbench import layout
from infbench.defaults import schema_default
from infbench.engines.base import cpu_runtimes
from infbench.memory.cli import add_parser as add_memory_commands


def _cmd_prompts(args) -> int:
    from infbench.pipeline.prompts import PromptSourceError, build_sample

    try:
        meta = build_sample(args.source, args.n, args.seed, args.out)
    except PromptSourceError as err:
        print(f"error: prompts: {err}", file=sys.stderr)
        return 2
    print(f"{meta.count} prompts from {meta.source} (seed {meta.seed}), sha256 {meta.sha256}", file=sys.stderr)
    return 0


def _cmd_build_env(args) -> int:
    from infbench.pipeline.envbuild import build_env

    build_env(args.name, args.requirements, args.venv, args.lock, args.marker, args.log)
    return 0


def _cmd_existing_env(args) -> int:
    from infbench.pipeline.envbuild import ExistingEnvError, link_existing_env

    try:
        link_existing_env(args.name, args.engine, args.kind, args.python, args.venv, args.lock, args.marker)
    except ExistingEnvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_seeded_trace(args) -> int:
    from infbench.measure.trace import write_seeded_trace

    rows = write_seeded_trace(args.out, args.seed)
    print(f"wrote {args.out}: {rows} requests (seed {args.seed})")
    return 0


def _cmd_bench(args) -> int:
    from infbench.engines.server import ServerError
    from infbench.fileio import check_writable
    from infbench.jobs.bench import BenchFailure, BenchPaths, run_bench_pass

    if args.log:
        check_writable([args.log.parent])
    _log_to(args.log)
    paths = BenchPaths(
        engine_spec=args.engine_spec,
        model_spec=args.model_spec,
        prompts=args.prompts,
        venv=args.venv,
        lock=args.lock,
        out_dir=args.out_dir,
        server_log=args.server_log,
        threads=args.threads,
        repeat=args.repeat,
        scenarios=tuple(args.scenarios) if args.scenarios else None,
        requests_dir=args.requests_dir,
    )
    log = logging.getLogger("infbench.jobs.bench")
    from infbench.layout import repeat_of

    if (repeat_of(args.out_dir) or 1) != args.repeat:
        print(
            f"error: bench --repeat {args.repeat} writes results/raw/E/M (1) or E/M/repeat-K (K >= 2), "
            f"not {args.out_dir}",
            file=sys.stderr,
        )
        return 2
    try:
        run_bench_pass(paths)
    except (ServerError, BenchFailure) as err:
        # Recorded: server.json says "failed" and why, the tables show it, and the next run repeats
        # this job. The job itself succeeds, so that the merge still runs under -k.
        log.error("%s", err)
        print(
            f"error: bench {args.out_dir}: {str(err).splitlines()[0]} (recorded in {args.out_dir}/server.json; "
            f"the tables show it; the next run repeats this job)",
            file=sys.stderr,
        )
        return 0
    except (KeyboardInterrupt, SystemExit):
        log.warning("interrupted: the server was stopped and no partial result was written")
        raise
    return 0


def _json_text(value: str) -> str:
    """A JSON argument (the merge plan, the config): the rules pass a file; JSON text still works."""
    return value if value.lstrip().startswith("{") else Path(value).read_text()


def _cmd_merge(args) -> int:
    from infbench.handoff import MergePlan
    from infbench.results.bounds import BoundFiles
    from infbench.results.tables import merge

    plan = MergePlan.from_json(_json_text(args.plan))
    if args.estimates is not None or args.measured is not None or args.bandwidth is not None:
        files = BoundFiles.listed(args.estimates or [], args.measured or [], args.bandwidth)  # the merge rule
    else:  # by hand: the layout's files of the workflow directory holding --raw-dir (results/raw)
        files = BoundFiles.under(args.raw_dir.parent.parent, plan.engines, plan.models)
    merge(args.raw_dir, args.out_dir, plan, files)
    print(f"tables written to {args.out_dir}", file=sys.stderr)
    return 0


def _cmd_provenance(args) -> int:
    from infbench.results.provenance import collect, write_provenance

    prov = collect(
        json.loads(_json_text(args.config)),
        tables=args.tables,
        locks=args.locks,
        model_metas=args.models,
        prompt_metas=args.prompts_meta,
        servers=args.servers,
        records=args.records,
        bandwidth=args.bandwidth,
        repeat_dirs=args.repeat_dirs,
    )
    write_provenance(args.out, prov)
    print(f"provenance of run {prov.run_id} written to {args.out}", file=sys.stderr)
    return 0


def _cmd_plots(args) -> int:
    from infbench.handoff import MergePlan
    from infbench.results.plots import PlotData, write_plots
    from infbench.results.workloadplots import write_workload_plots

    plan = MergePlan.from_json(args.plan.read_text())
    data = PlotData.load(args.raw_dir, plan)  # read once for both
    paths = write_plots(args.raw_dir, plan, args.out_dir, data) + write_workload_plots(data, args.out_dir)
    print("plots: " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _cmd_report_pages(args) -> int:
    from infbench.results.reportpages import write_pages

    paths = write_pages(args.tables, args.provenance, args.out_dir)
    print("report pages: " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _cmd_bundle(args) -> int:
    import yaml

    from infbench.results.bundle import BundleError
    from infbench.results.bundle_make import make_bundle
    from infbench.results.redact import Redactor

    config: dict = {}
    for path in args.configfile:  # only to learn which values the config marks as secret
        config.update(yaml.safe_load(path.read_text()) or {})
    try:
        result = make_bundle(args.root, args.out_dir, Redactor.from_sources(config))
    except BundleError as err:
        print(f"error: bundle: {err}", file=sys.stderr)
        return 2
    _report_bundle(result)
    return 0


def _report_bundle(result) -> None:
    print(
        f"bundle {result.path}: run {result.run_id}, {result.files} files, {result.size_bytes / 1e6:.2f} MB",
        file=sys.stderr,
    )
    for name, count in sorted(result.redacted.items()):
        print(f"  redacted {count} secret(s) in {name}", file=sys.stderr)
    if result.short_secrets:
        print(
            f"  warning: {result.short_secrets} secret value(s) shorter than 8 characters were redacted only "
            "under secret keys, not searched for as bare text",
            file=sys.stderr,
        )
    print(result.path)  # stdout: the path alone, for scripts


def _cmd_verify(args) -> int:
    from infbench.results.bundle import BundleError, UnsafeArchiveError
    from infbench.results.bundle_verify import verify_bundle

    try:
        result = verify_bundle(args.bundle, _extract_limits(args.max_gib))
    except UnsafeArchiveError as err:
        print(f"REFUSED {args.bundle}: {err} (nothing was extracted)", file=sys.stderr)
        return 2
    except BundleError as err:
        print(f"error: verify: {err}", file=sys.stderr)
        return 2
    for problem in result.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if result.ok:
        print(
            f"OK {args.bundle}: run {result.run_id}, {result.checked_files} checksums match, "
            f"{len(result.recomputed_tables)} tables recomputed from the raw records match",
            file=sys.stderr,
        )
        return 0
    print(f"FAILED {args.bundle}: {len(result.problems)} problem(s)", file=sys.stderr)
    return 1


def _cmd_compare(args) -> int:
    from infbench.results.bundle import BundleError, UnsafeArchiveError
    from infbench.results.compare import CompareError
    from infbench.results.comparereport import compare_paths

    try:
        outcome = compare_paths(
            args.a,
            args.b,
            args.out,
            fail_if_worse=args.fail_if_worse,
            allow_different_workload=args.allow_different_workload,
            limits=_extract_limits(args.max_gib),
        )
    except UnsafeArchiveError as err:
        print(f"error: compare: REFUSED {err} (nothing was extracted)", file=sys.stderr)
        return 2
    except (BundleError, CompareError) as err:
        print(f"error: compare: {err}", file=sys.stderr)
        return 2
    if outcome.text:
        print(outcome.text)
    for path in outcome.written:
        print(f"wrote {path}", file=sys.stderr)
    print(outcome.message, file=sys.stderr)
    return outcome.code


def _extract_limits(max_gib: float | None):
    """The extraction limits, the total (and the per-file limit with it) raised or lowered by --max-gib."""
    from infbench.results.bundle_verify import ExtractLimits

    if max_gib is None:
        return ExtractLimits()
    total = int(max_gib * 2**30)
    return ExtractLimits(total_bytes=total, file_bytes=min(total, ExtractLimits().file_bytes))


def _cmd_calibrate(args) -> int:
    from infbench.measure.calibrate import LAG_LIMIT_S, calibrate, format_report
    from infbench.measure.refserver import RefSettings

    settings = RefSettings(
        ttft_s=args.ttft,
        itl_s=args.itl,
        tokens=args.tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        role_chunk=args.role_chunk,
        usage=not args.no_usage,
        continuous_usage=args.continuous_usage,
    )
    workers = args.workers if args.workers == "auto" else int(args.workers)
    rows = calibrate(
        args.concurrency,
        settings,
        args.requests_per_stream,
        workers=workers,
        lag_limit_s=LAG_LIMIT_S if args.lag_limit_ms is None else args.lag_limit_ms / 1e3,
        progress=lambda line: print(line, file=sys.stderr),
    )
    report = format_report(rows, settings)
    print(report)
    if args.out:
        args.out.write_text(report)
    bad = [row for row in rows if row.measured.errors]
    return 1 if bad else 0


def _log_to(path: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prompts", help="sample N chat prompts with a seed from a source")
    p.add_argument("--source", required=True, help="builtin | jsonl:PATH | hf:DATASET[:SPLIT]")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=schema_default("prompts.seed"))
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("build-env", help="build a venv from envs/NAME.txt and write its lock")
    p.add_argument("--name", required=True)
    p.add_argument("--requirements", type=Path, required=True)
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--marker", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.set_defaults(func=_cmd_build_env)

    p = sub.add_parser(
        "existing-env",
        help="use an existing interpreter as an engine env: check it, write its "
        "pip freeze as the lock, link it under .venvs/NAME (nothing is installed)",
    )
    p.add_argument("--name", required=True, help="the env's name (.venvs/NAME, results/envs/NAME.lock)")
    p.add_argument("--engine", required=True, help="the engine using it (named in errors)")
    p.add_argument("--kind", required=True, help="the engine's kind: which packages must be there")
    p.add_argument("--python", required=True, help="the interpreter, e.g. /opt/venv/bin/python")
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--marker", type=Path, required=True)
    p.set_defaults(func=_cmd_existing_env)

    p = sub.add_parser("bench", help="run one (engine, model) bench job")
    p.add_argument("--engine-spec", type=Path, required=True)
    p.add_argument("--model-spec", type=Path, required=True)
    p.add_argument("--prompts", type=Path, required=True)
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--server-log", type=Path, required=True)
    p.add_argument("--log", type=Path)
    p.add_argument("--threads", type=int, default=1, help="the job's CPU threads (engines with a thread count get it)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="which pass (scenarios.NAME.repeats): 1, or K >= 2 (--out-dir E/M/repeat-K)",
    )
    p.add_argument("--scenarios", nargs="+", help="run only these scenarios of the engine spec (a repeat's pass)")
    p.add_argument("--requests-dir", type=Path, help="results/requests/MODEL: the prepared scenarios' request files")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("seeded-trace", help="write the small seeded trace (Mooncake format) a trace scenario replays")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_seeded_trace)

    p = sub.add_parser("merge", help="merge raw records into markdown tables and a CSV")
    p.add_argument("--raw-dir", type=Path, default=Path(layout.RAW))
    p.add_argument("--out-dir", type=Path, default=Path(layout.TABLES))
    p.add_argument(
        "--plan",
        required=True,
        help="the merge plan, a JSON file (the merge rule's, or an earlier merge's results/tables/merge_plan.json) "
        "or JSON text: "
        "{engines: {name: label}, models: {...}, scenarios: {name: kind}}",
    )
    # What the decode bounds read (the merge rule passes them; without any, the layout's files beside --raw-dir).
    p.add_argument("--estimates", type=Path, nargs="*", help="results/memory/MODEL.json")
    p.add_argument("--measured", type=Path, nargs="*", help="results/raw/ENGINE/MODEL/memory.json")
    p.add_argument("--bandwidth", type=Path, help="results/hardware/bandwidth.json")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("provenance", help="write results/provenance.json (what ran, on what, when)")
    p.add_argument(
        "--config", required=True, help="the resolved config, a JSON file or JSON text (secrets are redacted again)"
    )
    p.add_argument("--tables", type=Path, nargs="+", required=True)
    p.add_argument("--locks", type=Path, nargs="*", default=[])
    p.add_argument("--models", type=Path, nargs="*", default=[], help="results/models/*.json")
    p.add_argument("--prompts-meta", type=Path, nargs="*", default=[], help="results/prompts/*.meta.json")
    p.add_argument("--servers", type=Path, nargs="*", default=[], help="results/raw/*/*/server.json")
    p.add_argument("--records", type=Path, nargs="*", default=[], help="results/raw/*/*/*.jsonl")
    p.add_argument(
        "--repeat-dirs", type=Path, nargs="*", default=[], help="results/raw/*/*/repeat-K (repeats 2 and up)"
    )
    p.add_argument("--bandwidth", type=Path, help="results/hardware/bandwidth.json (memory read benchmark)")
    p.add_argument("--out", type=Path, default=Path(layout.PROVENANCE))
    p.set_defaults(func=_cmd_provenance)

    p = sub.add_parser("plots", help="plot tokens/s, TTFT and latency CDFs and throughput as PNG")
    p.add_argument("--raw-dir", type=Path, default=Path(layout.RAW))
    p.add_argument("--plan", type=Path, default=Path(layout.MERGE_PLAN))
    p.add_argument("--out-dir", type=Path, default=Path(layout.PLOTS))
    p.set_defaults(func=_cmd_plots)

    p = sub.add_parser("report-pages", help="render the tables and the provenance as HTML for the report")
    p.add_argument("--tables", type=Path, nargs="+", required=True)
    p.add_argument("--provenance", type=Path, default=Path(layout.PROVENANCE))
    p.add_argument("--out-dir", type=Path, default=Path(layout.REPORT))
    p.set_defaults(func=_cmd_report_pages)

    p = sub.add_parser("bundle", help="write results/bundles/RUN_ID.tar.gz (secrets redacted, with a manifest)")
    p.add_argument("--root", type=Path, default=Path("."), help="the workflow directory (holds results/, logs/)")
    p.add_argument("--out-dir", type=Path, default=Path(layout.BUNDLES))
    p.add_argument(
        "--configfile",
        type=Path,
        action="append",
        default=[],
        help="config file(s) whose secret values (see `secrets:`) must not reach the bundle",
    )
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("verify", help="check a bundle: checksums, recomputed tables, safe paths")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument(
        "--max-gib",
        type=float,
        help="refuse a bundle that unpacks to more than this many GiB (default 8; one file at most 4)",
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "compare",
        help="compare two runs (bundles or results folders) cell by cell: change, 95%% interval, verdict",
    )
    p.add_argument("a", type=Path, metavar="A", help="the baseline: a bundle (.tar.gz) or a results folder")
    p.add_argument("b", type=Path, metavar="B", help="the run compared with it (may be A itself)")
    p.add_argument("--out", type=Path, default=Path(layout.COMPARE), help="where the report goes")
    p.add_argument(
        "--fail-if-worse",
        type=float,
        metavar="PCT",
        help="exit 1 when any cell is significantly worse in B by more than PCT percent (for CI)",
    )
    p.add_argument(
        "--allow-different-workload",
        action="store_true",
        help="compare even when the prompt samples or sampling settings differ (nothing is then paired)",
    )
    p.add_argument("--max-gib", type=float, help="as for verify: the most a bundle may unpack to")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "calibrate",
        help="run the client against a reference server with known timing; "
        "print measured against true TTFT, TPOT, ITL and tokens/s per concurrency",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--requests-per-stream", type=int, default=8, help="requests = this x concurrency (at least 16)")
    p.add_argument("--ttft", type=float, default=0.02, help="reference server: seconds to the first token")
    p.add_argument("--itl", type=float, default=0.01, help="reference server: seconds between tokens")
    p.add_argument("--tokens", type=int, default=100, help="tokens per response")
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--role-chunk", action="store_true", help="a role-only chunk first (not a token)")
    p.add_argument("--no-usage", action="store_true", help="no usage chunk: the client counts tokens itself")
    p.add_argument("--continuous-usage", action="store_true", help="cumulative usage in every chunk")
    p.add_argument("--workers", default="1", help="client processes: a number or auto")
    p.add_argument(
        "--lag-limit-ms",
        type=float,
        default=None,
        help="client (and reference server) lag p99 that flags a run (default 1 ms)",
    )
    p.add_argument("--out", type=Path, help="also write the report (markdown) here")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "memory-bandwidth",
        help="measure this machine's memory bandwidth (read benchmark and STREAM triad) as JSON",
        description="Two short benchmarks, one thread per core, holding the CPU lock of bench jobs: a read "
        "(sum) and a STREAM-style triad; the single-request decode bound of CPU runs uses the higher.",
    )
    p.add_argument("--buffer-mib", type=int, default=128, help="MiB read per thread (default %(default)s)")
    p.add_argument(
        "--repeats", type=int, default=5, help="timed repeats of each; the best counts (default %(default)s)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="results/hardware/bandwidth.json")
    p.set_defaults(func=_cmd_memory_bandwidth)

    add_memory_commands(sub, cpu_runtimes)  # estimate, memory-estimate, memory-table
    return parser


def _cmd_memory_bandwidth(args: argparse.Namespace) -> int:
    from infbench.jobs.bandwidth import run_memory_bandwidth

    if args.buffer_mib <= 0 or args.repeats <= 0:
        print("infbench memory-bandwidth: error: --buffer-mib and --repeats must be positive", file=sys.stderr)
        return 2
    measured = run_memory_bandwidth(args.out, args.buffer_mib, args.repeats)
    print(f"wrote {args.out}: {measured.summary()}")
    if not measured.quiet:
        print(f"warning: others used the machine while measuring: {measured.machine_load_summary()}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # one clear line on the console; the traceback goes to the log file
        _log_traceback(f"{args.command} failed: {err}")
        print(f"error: {args.command}: {err}", file=sys.stderr)
        return 1


def _log_traceback(message: str) -> None:
    record = logging.getLogger("infbench").makeRecord(
        "infbench", logging.ERROR, __file__, 0, message, (), sys.exc_info()
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


if __name__ == "__main__":
    sys.exit(main())
