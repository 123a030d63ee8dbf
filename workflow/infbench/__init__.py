"""infbench: reproducible benchmarks of LLM inference engines through their OpenAI-compatible API.

Kept import-light on purpose: some modules (models, memory) run inside an engine's venv, which has
torch and transformers but not the harness's own dependencies.

The package is layered: a module imports from its own layer and the ones below, never from above
(tests/unit/test_layers.py checks it, and that no import cycle exists). Bottom to top; packages in
one layer are peers and do not import each other. docs/architecture.md says what lives where.
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("fileio", "defaults", "secrets", "procutil", "layout", "handoff"),  # root leaves
    ("measure", "memory"),  # the measurement library; the memory estimator
    ("engines",),  # engine kinds, spec files, the managed server, GPU leases
    ("pipeline",),  # config, prompts, envs, models: the steps before a bench job
    ("jobs",),  # the bench job
    ("results",),  # merge, tables, plots, provenance, bundles
    ("cli",),  # the infbench command
)
