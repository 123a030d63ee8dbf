"""Preparing a run: the config and its schema, spec files, prompt samples, engine venvs and models."""
