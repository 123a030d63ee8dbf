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
