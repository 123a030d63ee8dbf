# Build one venv per environment from its pinned envs/{env}.txt and record the lock (pip freeze).
rule env:
    input:
        "envs/{env}.txt",
    output:
        lock="results/envs/{env}.lock",
        marker=".venvs/{env}/.infbench-built",
    log:
        "logs/envs/{env}.log",
    shell:
        "infbench build-env --name {wildcards.env} --requirements {input} --venv .venvs/{wildcards.env} "
        "--lock {output.lock} --marker {output.marker} --log {log}"


# Use an existing interpreter (engines.*.env: {python: PATH}): check it, record its pip freeze as
# the lock and link it under .venvs/{env}; nothing is installed into it.
rule existing_env:
    output:
        lock="results/envs/{env}.lock",
        marker=".venvs/{env}/.infbench-built",
    log:
        "logs/envs/{env}.log",
    wildcard_constraints:
        env=one_of(list(EXISTING_ENVS)),
    params:
        engine=lambda wc: EXISTING_ENVS[wc.env][0],
        kind=lambda wc: EXISTING_ENVS[wc.env][1],
        python=lambda wc: EXISTING_ENVS[wc.env][2],
    shell:
        "infbench existing-env --name {wildcards.env} --engine {params.engine} --kind {params.kind} "
        "--python {params.python:q} --venv .venvs/{wildcards.env} --lock {output.lock} "
        "--marker {output.marker} > {log} 2>&1"


ruleorder: existing_env > env
