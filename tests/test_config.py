"""The run config: defaults in sync with pyproject, presets, overrides and clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedapp.config import ConfigError, RunConfig, available_presets, load_preset

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_run_config_equals_the_declared_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig.default_values()
    assert "federations" not in pyproject["tool"]["flwr"], "keep federations out of pyproject (FLOWER_NOTES)"


def test_defaults_parse():
    config = RunConfig.from_run_config(RunConfig.default_values())
    assert config == RunConfig()


def test_override_wins_over_default():
    values = {**RunConfig.default_values(), "alpha": 0.1, "algorithm": "fedavg", "num-server-rounds": 3}
    config = RunConfig.from_run_config(values)
    assert (config.alpha, config.num_server_rounds) == (0.1, 3)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("alpha", 0.0, ["alpha", "0.0", "> 0"]),
        ("alpha", -1, ["alpha", "-1"]),
        ("class-presence-ratio", 1.5, ["class-presence-ratio", "1.5", "(0, 1]"]),
        ("class-presence-ratio", 0.0, ["class-presence-ratio"]),
        ("num-server-rounds", -2, ["num-server-rounds", "-2", ">= 1"]),
        ("algorithm", "fedmagic", ["algorithm", "fedmagic", "fedavg"]),
        ("dataset", "mnist", ["dataset", "mnist", "ml-digits"]),
        ("partition", "shards", ["partition", "shards", "iid"]),
        ("lr", "fast", ["lr", "fast", "number"]),
        ("local-epochs", 1.5, ["local-epochs", "1.5", "integer"]),
        ("imbalance-factor", 0.5, ["imbalance-factor", ">= 1"]),
        ("device", "tpu", ["device", "tpu"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(key, value, words):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_run_config({**RunConfig.default_values(), key: value})
    for word in words:
        assert word in str(error.value)


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown run-config key.*'learning-rate'"):
        RunConfig.from_run_config({**RunConfig.default_values(), "learning-rate": 0.1})


def test_preset_applies_and_explicit_overrides_win(tmp_path, monkeypatch):
    monkeypatch.setattr("fedapp.config.PRESET_DIR", tmp_path)
    (tmp_path / "mine.yaml").write_text("alpha: 0.3\nnum-server-rounds: 7\nlr: 0.01\n")
    values = {**RunConfig.default_values(), "preset": "mine", "num-server-rounds": 2}
    config = RunConfig.from_run_config(values)
    assert config.alpha == 0.3 and config.lr == 0.01  # from the preset
    assert config.num_server_rounds == 2  # explicit override beats the preset


def test_unknown_preset_lists_available(tmp_path, monkeypatch):
    monkeypatch.setattr("fedapp.config.PRESET_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text("alpha: 1.0\n")
    with pytest.raises(ConfigError, match="preset='nope' does not exist; available: a"):
        load_preset("nope")


def test_preset_with_unknown_key_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("fedapp.config.PRESET_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("alphaa: 1.0\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_preset("bad")


@pytest.mark.parametrize("name", available_presets())
def test_every_shipped_preset_validates(name):
    RunConfig.from_run_config({**RunConfig.default_values(), "preset": name})


def test_more_clients_than_the_data_allows_fails_clearly():
    from fedapp.data import federate

    config = RunConfig(partition="iid", min_partition_size=10)
    with pytest.raises(ValueError, match="min-partition-size"):
        federate(config, 1000)


def test_readme_documents_every_run_config_key():
    readme = (ROOT / "README.md").read_text()
    missing = [key for key in RunConfig.default_values() if f"| `{key}` |" not in readme]
    assert not missing, f"README.md run-config table lacks {missing}"


def test_task_datasets_list_every_dataset_once_under_its_loaders_task():
    from fedapp.config import DATASETS
    from fedapp.data import load_dataset
    from fedapp.data.base import TASK_DATASETS

    listed = [name for names in TASK_DATASETS.values() for name in names]
    assert sorted(listed) == sorted(DATASETS)
    for task, name in (("multilabel", "ml-digits"), ("singlelabel", "lt-digits")):
        assert name in TASK_DATASETS[task] and load_dataset(RunConfig(dataset=name)).task == task
