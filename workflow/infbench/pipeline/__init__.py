"""Preparing a run: the config and its checks, prompt samples, engine venvs, models and GGUF files."""
