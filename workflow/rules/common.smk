# Config validation and the small input functions the rules share.

import contextlib
import json
import os
import re
import tempfile
from dataclasses import asdict

from infbench import layout
from infbench.engines.base import engine_for
from infbench.handoff import MergePlan, ServerInfo
from infbench.pipeline.config import (
    ConfigError,
    engine_label,
    engine_spec,
    existing_python,
    is_random,
    model_architecture,
    model_label,
    model_source,
    model_spec,
    resolve_env,
    scenario_of,
    validate_config,
)
from infbench.pipeline.envbuild import ExistingEnvError, check_existing_envs

try:
    _validated = validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration:\n{err}") from None
config.clear()
config.update(_validated)
try:  # an existing interpreter (env: {python: PATH}) must have the engine's package: say so at start-up
    check_existing_envs(config)
except ExistingEnvError as err:
    raise WorkflowError(f"invalid configuration:\n{err}") from None

ENGINES = list(config["engines"])
MODELS = list(config["models"])
SCENARIOS = list(config["scenarios"])
# Scenarios whose requests the prepare step builds per model (the requests rule) - tokenizer-exact prompts,
# sampled conversations.
PREPARED_SCENARIOS = [s for s in SCENARIOS if scenario_of(config, s).prepares]
PROMPTS_NAME = config["prompts"]["name"]
# Passes per scenario (scenarios.NAME.repeats): pass 1 is the bench job, each further pass a job of
# its own (rule bench_repeat) running the scenarios repeated that often.
REPEATS = {s: config["scenarios"][s]["repeats"] for s in SCENARIOS}
MAX_REPEATS = max(REPEATS.values())


def engine_of(engine):
    """The plug-in of an engine's kind (infbench/engines/kinds/): what only some kinds do."""
    return engine_for(config["engines"][engine]["kind"])


def bench_rules():
    """Bench jobs differ only in the extra record files some kinds measure beside the scenarios (TGI:
    its native route): one bench rule per set of extra runs, named after the kinds that have it
    (bench, bench_tgi), as {name of the rule: (extra runs, engines)}."""
    groups = {}
    for engine in ENGINES:
        groups.setdefault(engine_of(engine).extra_runs, []).append(engine)
    rules_ = {}
    for extra, engines in groups.items():
        kinds = sorted({engine_of(e).kind for e in engines})
        rules_["_".join(["bench", *kinds]) if extra else "bench"] = (extra, engines)
    return rules_


def one_of(names):
    """A wildcard constraint matching exactly these names (none: a pattern that never matches)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    engine="|".join(ENGINES),
    model="|".join(MODELS),
    scenario="|".join(SCENARIOS),


def engine_env(engine):
    """The venv an engine's server runs in (picked by device for engines with one per device)."""
    return resolve_env(config["engines"][engine], config["device"], engine)


def env_marker(env):
    return f".venvs/{env}/.infbench-built"


def failure_marker(wildcards):
    """A bench job that failed left results/failures/{engine}/{model}.json: as an input (newer than
    the outputs it wrote) it makes the next run repeat exactly that job; absent, nothing changes."""
    marker = layout.failure_marker(wildcards.engine, wildcards.model)
    return [marker] if os.path.exists(marker) else []


def repeat_failure_marker(wildcards):
    """As failure_marker, for pass K of a bench job: results/failures/{engine}/{model}/repeat-K.json."""
    marker = layout.repeat_failure_marker(wildcards.engine, wildcards.model, int(wildcards.repeat))
    return [marker] if os.path.exists(marker) else []


def repeated_scenarios(repeat):
    """The scenarios with at least `repeat` passes, in config order."""
    return [s for s in SCENARIOS if REPEATS[s] >= repeat]


def repeat_dirs(engine, model):
    """results/raw/{engine}/{model}/repeat-K for each pass K >= 2 (none without repeats)."""
    return [layout.repeat_raw_dir(engine, model, k) for k in range(2, MAX_REPEATS + 1)]


def all_repeat_dirs():
    return [path for e in ENGINES for m in MODELS for path in repeat_dirs(e, m)]


def previous_round(wildcards):
    """Pass K-1 of every engine on this model, as an input of pass K: passes interleave between
    engines. ancient(): its time never makes pass K out of date, so one lost pass reruns alone."""
    k = int(wildcards.repeat)
    done = [
        layout.server_info(e, wildcards.model) if k == 2 else layout.repeat_raw_dir(e, wildcards.model, k - 1)
        for e in ENGINES
    ]
    return [ancient(path) for path in done]


def failed_bench_jobs():
    """(engine, model, reason) of this config's bench jobs whose server.json says they failed."""
    failed = []
    for path in [*all_server_files(), *(f"{d}/server.json" for d in all_repeat_dirs())]:
        try:
            server = ServerInfo.read(path)
        except (OSError, ValueError):  # HandoffError is a ValueError
            continue
        if server.status == "failed":
            failed.append((server.engine, server.model, server.reason))
    return failed


# Existing interpreters (env: {python: PATH}), by env name: linked, not built (rule existing_env).
EXISTING_ENVS = {
    resolve_env(e, config["device"], name): (name, e["kind"], existing_python(e))
    for name, e in config["engines"].items()
    if existing_python(e)
}


def model_build_inputs(wildcards):
    """The tools env, and for random weights the architecture config they are built from."""
    model = config["models"][wildcards.model]
    return [env_marker(config["tools_env"]), *([model_architecture(model)] if is_random(model) else [])]


def model_build_dtype(wildcards):
    """Random weights are written at the served dtype; other sources at the model's dtype."""
    model = config["models"][wildcards.model]
    return model_spec(config, wildcards.model).dtype if is_random(model) else model["dtype"]


def engine_inputs(wildcards):
    """A bench job's engine-specific inputs: its env and lock (none for an engine without an env) and
    what its kind needs beyond them (llama.cpp: the model's GGUF record)."""
    env = engine_env(wildcards.engine)
    inputs = {"env": env_marker(env), "lock": f"results/envs/{env}.lock"} if env else {}
    inputs.update(engine_of(wildcards.engine).extra_inputs(wildcards.model))
    return inputs


def gguf_dtype(wildcards):
    """llama.cpp serves the GGUF at the dtype the other engines compute in."""
    model = config["models"][wildcards.model]
    return model.get("serve_dtype") or model["dtype"]


def model_gpus(wildcards):
    return config["models"][wildcards.model]["gpus"]


def all_cores(wildcards=None):
    """Every core of a local run. A function, so that `snakemake --report` needs no --cores; under a
    cluster executor (no --cores) the profile's set-threads decides, else one."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def bench_threads(wildcards):
    """On the CPU a bench job takes every core, so nothing runs beside it and skews its numbers."""
    return all_cores() if config["device"] == "cpu" else max(1, min(4, all_cores()))


def raw_outputs(engine, model):
    runs = [*SCENARIOS, *engine_of(engine).extra_runs]
    return [layout.records(engine, model, run) for run in runs]


def merge_plan():
    return MergePlan(
        engines={e: engine_label(config, e) for e in ENGINES},
        models={m: model_label(config, m) for m in MODELS},
        scenarios={s: config["scenarios"][s]["kind"] for s in SCENARIOS},
        native_engines=[e for e in ENGINES if engine_of(e).extra_runs],
        repeats={s: n for s, n in REPEATS.items() if n > 1},
    ).to_json()


@contextlib.contextmanager
def handoff_file(text):
    """A temporary file holding text (the merge plan, the redacted config) for the command of a rule -
    what a rule hands its command travels in a file, never on a command line (process lists, logs)."""
    with tempfile.TemporaryDirectory(prefix="infbench-") as folder:
        path = os.path.join(folder, "handoff.json")
        with open(path, "w") as out:
            out.write(text)
        yield path


def write_spec_file(path, spec, log_path):
    """A spec rule's run block: the spec file, and a line in the rule's log saying so."""
    from infbench.fileio import write_json_atomic, write_text_atomic

    write_json_atomic(path, spec)
    write_text_atomic(log_path, f"wrote {path}\n")


def all_raw_records():
    return [path for e in ENGINES for m in MODELS for path in raw_outputs(e, m)]


def all_server_files():
    return [layout.server_info(e, m) for e in ENGINES for m in MODELS]


def memory_python():
    return f".venvs/{config['tools_env']}/bin/python"


def memory_estimate_input(wildcards):
    """The model's architecture file when the config names one, else the prepared model."""
    inputs = {"env": f".venvs/{config['tools_env']}/.infbench-built"}
    architecture = model_architecture(config["models"][wildcards.model])
    if architecture:
        inputs["source"] = architecture
    else:
        inputs["source"] = f"results/models/{wildcards.model}.json"
    return inputs


def memory_source_flag(wildcards):
    # An architecture file is a config.json; results/models/*.json points at the model dir.
    if model_architecture(config["models"][wildcards.model]):
        return "--config"
    return "--model-meta"


def memory_table_inputs():
    """(estimates, measured): the memory table's inputs, in the order verify reads them too."""
    return layout.memory_table_inputs(config["engines"], config["models"])


def prepared_requests(wildcards):
    """A bench job's prepared request files: one per prepared scenario, for its model."""
    return [layout.request_file(wildcards.model, s) for s in PREPARED_SCENARIOS]


def scenario_source(wildcards):
    """The file a prepared scenario reads (a trace, a conversations file), when it has one."""
    return scenario_of(config, wildcards.scenario).source_file() or []


def compare_baseline(wildcards):
    """The run to compare with, from --config compare_to (a clear error when it is not set)."""
    baseline = config.get("compare_to") or ""
    if not baseline:
        raise ValueError(
            "compare needs the run to compare with: snakemake --cores all compare --config "
            "compare_to=BUNDLE_OR_RESULTS_FOLDER"
        )
    return baseline
