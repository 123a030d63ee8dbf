"""Config validation: defaults, and errors that name the key to fix."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO
from infbench.pipeline.config import ConfigError, engine_spec, model_spec, validate_config

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults():
    config = validate_config(DEFAULT)
    assert config["prompts"]["name"] == "prompts"
    assert config["engines"]["transformers"]["server_env"] == {}
    assert config["bench"]["host"] == "127.0.0.1"
    spec = engine_spec(config, "transformers")
    assert spec.env == "transformers" and spec.sampling.max_tokens == DEFAULT["sampling"]["max_tokens"]
    assert [s.name for s in spec.scenarios] == list(DEFAULT["scenarios"])
    assert model_spec(config, "smollm2-135m").path == "resources/models/smollm2-135m"


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_unknown_key_is_named():
    config = copy.deepcopy(DEFAULT)
    config["engines"]["transformers"]["argz"] = []
    message = _error(config)
    assert "engines.transformers" in message and "argz" in message


def test_bad_value_is_named():
    config = copy.deepcopy(DEFAULT)
    config["engines"]["transformers"]["kind"] = "llama.cpp"
    assert "engines.transformers.kind" in _error(config)
    config = copy.deepcopy(DEFAULT)
    config["prompts"]["n"] = 0
    assert "prompts.n" in _error(config)
    config = copy.deepcopy(DEFAULT)
    config["sampling"]["output_length"] = "long"
    assert "sampling.output_length" in _error(config)


def test_bad_prompt_source_and_model_source_are_named():
    config = copy.deepcopy(DEFAULT)
    config["prompts"]["source"] = "csv:foo"
    assert "prompts.source" in _error(config)
    config = copy.deepcopy(DEFAULT)
    config["models"]["smollm2-135m"]["source"] = "s3://bucket/model"
    assert "models.smollm2-135m.source" in _error(config)


def test_missing_required_section_is_named():
    config = copy.deepcopy(DEFAULT)
    del config["engines"]
    assert "'engines' is a required property" in _error(config)


def test_gpus_must_match_the_device():
    config = copy.deepcopy(DEFAULT)
    config["models"]["smollm2-135m"]["gpus"] = 2
    assert "models.smollm2-135m.gpus" in _error(config)
    config["device"] = "cuda"
    config["models"]["smollm2-135m"]["gpus"] = 0
    assert "models.smollm2-135m.gpus" in _error(config)


def test_env_per_device_must_cover_the_device():
    config = copy.deepcopy(DEFAULT)
    config["engines"]["transformers"]["env"] = {"cuda": "transformers"}
    assert "engines.transformers.env" in _error(config)


def test_snakemake_stops_on_a_bad_key_with_its_name(tmp_path):
    import subprocess

    bad = copy.deepcopy(DEFAULT)
    bad["sampling"]["max_tokenz"] = 5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--configfile", str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "sampling" in result.stderr + result.stdout and "max_tokenz" in result.stderr + result.stdout
