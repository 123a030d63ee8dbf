"""infbench: reproducible benchmarks of LLM inference engines through their OpenAI-compatible API.

Kept import-light on purpose: some modules (models, memory) run inside an engine's venv, which has
torch and transformers but not the harness's own dependencies.
"""

__version__ = "0.1.0"
