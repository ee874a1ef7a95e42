"""The trainer reads its env and retriever URLs from SEARCHGYM_ENV_URL / SEARCHGYM_RETRIEVER_URL too:
over the config file, under --set and the flags (what docker-compose.yml's trainer service relies on)."""

from __future__ import annotations

from trainer.cli import build_parser, overrides_from_args
from trainer.config import ENV_VARIABLES, load_config


def test_precedence_file_then_variables_then_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("env:\n  env_url: http://from-file:8001\n  retriever_url: http://from-file:8000\n")
    environ = {"SEARCHGYM_ENV_URL": "http://from-env:8001"}
    config = load_config(path, [], environ=environ)
    assert config.env.env_url == "http://from-env:8001"  # the variable over the file
    assert config.env.retriever_url == "http://from-file:8000"  # the file where no variable is set
    args = build_parser().parse_args(["train", "--config", str(path), "--env-url", "http://from-flag:8001"])
    assert load_config(path, overrides_from_args(args), environ=environ).env.env_url == "http://from-flag:8001"
    set_flag = ["env.env_url=http://from-set:8001"]
    assert load_config(path, set_flag, environ=environ).env.env_url == "http://from-set:8001"
    # Empty means unset (compose passes `${VAR:-}` through as ""); the defaults stay without a file.
    assert load_config(path, [], environ={"SEARCHGYM_ENV_URL": " "}).env.env_url == "http://from-file:8001"
    assert load_config(None, [], environ={}).env.env_url is None
    retriever = load_config(None, [], environ={"SEARCHGYM_RETRIEVER_URL": "http://r:8000"}).env.retriever_url
    assert retriever == "http://r:8000"
    assert set(ENV_VARIABLES.values()) == {"env.env_url", "env.retriever_url"}


def test_a_bad_value_from_a_variable_names_it(tmp_path):
    import pytest

    from trainer.config import ConfigError

    path = tmp_path / "train.yaml"
    path.write_text("env: [1, 2]\n")  # not a section: the variable cannot be placed
    with pytest.raises(ConfigError, match=r"\$SEARCHGYM_ENV_URL: 'env' is not a section"):
        load_config(path, [], environ={"SEARCHGYM_ENV_URL": "http://x:1"})
