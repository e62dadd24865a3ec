"""Every algorithm is one declaration; the registry, the config, pyproject and the README derive from it."""

from __future__ import annotations

import ast
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import strategies
from clients.base import BaseClient
from fedapp.algorithm import Algorithm
from fedapp.config import COMMON_OPTIONS, ConfigError, RunConfig, keys_read_by, pyproject_table
from fedapp.registry import algorithms, display_name, get_algorithm
from strategies.base import FederatedStrategy

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("fedapp", "strategies", "clients", "partitions")


def test_every_strategy_module_but_the_shared_ones_declares_one_algorithm():
    shared = {"base", "bookkeeping", "sampling", "screening"}
    modules = {info.name for info in pkgutil.iter_modules(strategies.__path__)} - shared
    declared = {algorithm.strategy.__module__.split(".")[-1] for algorithm in algorithms().values()}
    assert declared == modules
    for name, algorithm in algorithms().items():
        assert isinstance(algorithm, Algorithm) and algorithm.name == name
        assert issubclass(algorithm.strategy, FederatedStrategy) and issubclass(algorithm.client, BaseClient)
        assert algorithm.task in ("multilabel", "singlelabel", "any")
    assert len({a.display_name for a in algorithms().values()}) == len(algorithms())
    assert display_name("fedloge") == "FedLoGe" and display_name("not-declared") == "not-declared"
    with pytest.raises(ConfigError, match="algorithm='nope' is not available; available: centralized, ditto"):
        get_algorithm("nope")


def test_no_strategy_overrides_the_screening_aggregate_fit():
    for algorithm in algorithms().values():
        assert algorithm.strategy.aggregate_fit is FederatedStrategy.aggregate_fit, (
            f"{algorithm.strategy.__name__} overrides aggregate_fit: override aggregate_updates instead")


def test_run_config_keys_must_be_kebab_case():
    from fedapp.options import Option, option_table

    with pytest.raises(ValueError, match="'my_key' must be kebab-case"):
        option_table([Option("my_key", 1, "a key")], "a test")


def test_algorithm_choices_and_keys_come_from_the_declarations():
    with pytest.raises(ConfigError, match="algorithm='nope' is not allowed; allowed: "):
        RunConfig(algorithm="nope").validate()
    assert keys_read_by("fedprox") == {o.key for o in COMMON_OPTIONS} | {"mu"}
    assert "finetune-epochs" in keys_read_by("fedetf") and "finetune-epochs" in keys_read_by("fedbabu")
    assert "mu" not in keys_read_by("fedavg")
    assert RunConfig().mu == 0.01 and RunConfig(mu=0.5).replace(lr=0.1).mu == 0.5


def test_pyproject_run_config_is_the_generated_table():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert tomllib.loads(pyproject)["tool"]["flwr"]["app"]["config"] == RunConfig.default_values()
    assert pyproject_table() in pyproject, "regenerate it with: python -m fedapp.config"


def test_readme_key_table_lists_every_key_with_its_default():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Run config\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| ([^|]+?) \|", section, flags=re.M))
    defaults = RunConfig.default_values()
    assert set(rows) == set(defaults), (sorted(set(defaults) - set(rows)), sorted(set(rows) - set(defaults)))
    for key, shown in rows.items():
        value = shown.strip().strip("`")
        parsed = {"true": True, "false": False}.get(value, value.strip('"'))
        assert parsed == defaults[key] if isinstance(defaults[key], (bool, str)) else float(parsed) == defaults[key], (
            key, shown, defaults[key])


def test_an_algorithm_name_is_written_in_exactly_one_place():
    """Outside its declaration, code refers to an algorithm through the registry, never by its name.

    A string equal to a name counts, and so does an f-string (a message built in code) that holds the
    name as a word; docstrings and help texts with examples are prose and do not count. Values of run-config keys are another namespace (``algorithm =
    "fedavg"`` is the default run, ``head-aggregation = "fedavg"`` a way to average a head), so
    strings inside ``Option(...)`` do not count either.
    """
    counts = {name: [] for name in algorithms()}
    words = {name: re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])") for name in counts}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            skipped = {id(node) for call in ast.walk(tree)
                       if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Option"
                       for node in ast.walk(call)}
            formatted = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
                    for name, word in words.items():
                        if node.value == name or (id(node) in formatted and word.search(node.value)):
                            counts[name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    for name, places in counts.items():
        assert len(places) == 1, f"{name!r} is written in {places}"
