"""The run configuration: the common keys declared here, each algorithm's own in its declaration.

:class:`RunConfig` holds every key of Flower's flat run config (kebab-case there, snake_case as
attributes: ``config.weight_decay``). The keys are :class:`~fedapp.options.Option` declarations:
:data:`COMMON_OPTIONS` below, which every run reads, and the ``options`` of every algorithm's
declaration (``strategies/<name>.py``). ``pyproject.toml``'s ``[tool.flwr.app.config]`` and the
README's key table list the same keys with the same defaults (tests check both;
``python -m fedapp.config`` prints the pyproject table).

Precedence, lowest first: the declared defaults, the defaults a key's value sets for other keys
(``sets_defaults``, e.g. ``fedncalign-formulation``), then the preset named by ``preset``
(``fedapp/presets/<name>.yaml``), then every key whose run-config value differs from its default
(what ``flwr run . -c "key=value"`` changed). Consequence worth knowing: under a preset, a key
overridden back to its *default* value keeps the preset's value.

Every key is validated before anything trains; an error names the key, the value and what is
allowed.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

from fedapp.options import ConfigError, Option, Value, option_table, require
from fedapp.registry import algorithms

__all__ = ["COMMON_OPTIONS", "ConfigError", "RunConfig", "all_options", "available_presets", "keys_read_by",
           "load_preset"]

PRESET_DIR = Path(__file__).resolve().parent / "presets"

DATASETS = (
    "ml-digits", "lt-digits", "ml-cifar10", "cifar10-lt", "cifar100-lt", "ml-dermamnist",
    "voc2012", "chestx-ray14", "imagenet-lt", "image-folder", "multilabel-csv",
)


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _at_least_one(value: int) -> bool:
    return value >= 1


COMMON_OPTIONS: tuple[Option, ...] = (
    # What to run
    Option("algorithm", "fedavg", "which algorithm (strategy + client) to run"),
    Option("dataset", "ml-digits", "the dataset", choices=DATASETS),
    Option("preset", "", "a YAML file in fedapp/presets applied under the overrides"),
    Option("seed", 0, "seeds the hold-out, the partition, model init and data order",
           "an integer in [0, 2**32) (numpy's seed range)", lambda v: 0 <= v < 2**32),
    # Federation and local training
    Option("num-server-rounds", 20, "federated rounds", "an integer >= 1", _at_least_one),
    Option("local-epochs", 3, "local passes over the client's data per round", "an integer >= 1", _at_least_one),
    Option("batch-size", 32, "local mini-batch size", "an integer >= 1", _at_least_one),
    Option("optimizer", "adamw", "local optimizer", choices=("adamw", "sgd")),
    Option("lr", 3e-3, "local learning rate", "a number > 0", _positive),
    Option("weight-decay", 0.01, "optimizer weight decay", "a number >= 0", _non_negative),
    Option("momentum", 0.9, "SGD momentum", "a number in [0, 1)", lambda v: 0 <= v < 1),
    Option("fraction-fit", 1.0, "fraction of clients sampled per round", "a number in (0, 1]",
           lambda v: 0 < v <= 1),
    # Data and partitions
    Option("partition", "dirichlet", "how the training data is split", choices=("iid", "dirichlet")),
    Option("alpha", 0.5, "Dirichlet concentration", "a number > 0 (Dirichlet concentration)", _positive),
    Option("dirichlet-mode", "per-sample", "single-label Dirichlet: per-sample draws or cut proportions",
           choices=("per-sample", "cut")),
    Option("class-presence-ratio", 1.0, "multi-label: fraction of all classes present on each client",
           "a number in (0, 1] (fraction of all classes present on each client)", lambda v: 0 < v <= 1),
    Option("imbalance-factor", 10.0, "long-tail n_max / n_min of the training set", "a number >= 1",
           lambda v: v >= 1),
    Option("min-partition-size", 10, "smallest client partition allowed", "an integer >= 1", _at_least_one),
    Option("val-fraction", 0.1, "training data held out on the server for model selection", "a number in [0, 1)",
           lambda v: 0 <= v < 1),
    Option("local-test-size", 0, "each client's PM test set: 0 = n_kc / n * n_test per class; N = N samples",
           "an integer >= 0 (0: n_kc / n * n_test per class, FedLoGe's sizing; N: N samples per client)",
           _non_negative),
    Option("shot-split", "cumulative", "many/medium/few classes: cumulative 75%/95% cuts, thirds or counts",
           choices=("cumulative", "thirds", "counts")),
    Option("many-shot-min", 0, "shot-split=counts: many-shot classes have more samples than this",
           "an integer >= 0 (used by shot-split=counts)", _non_negative),
    Option("few-shot-max", 0, "shot-split=counts: few-shot classes have fewer samples than this",
           "an integer >= 0 (used by shot-split=counts)", _non_negative),
    Option("augment", "auto", "training augmentation: auto, none, crop-flip, crop",
           choices=("auto", "none", "crop-flip", "crop")),
    Option("data-root", "", "folder with the real datasets"),
    # Model
    Option("backbone", "cnn", "feature extractor", choices=("cnn", "resnet18", "resnet18-cifar")),
    Option("pretrained-path", "", "local torchvision ResNet-18 state dict (never downloads)"),
    # Outputs and devices
    Option("output-dir", "", "run directory (default outputs/<stamp>-<algorithm>-<dataset>)"),
    Option("device", "", "'' (first CUDA device, else CPU), cpu, cuda or cuda:N",
           "'' (the first CUDA device, else the CPU), 'cpu', 'cuda' or 'cuda:N'",
           lambda v: re.fullmatch(r"|cpu|cuda(:[0-9]+)?", v) is not None),
    Option("eval-batch-size", 512, "batch size of evaluation passes", "an integer >= 1", _at_least_one),
    Option("tensorboard", True, "TensorBoard event files in the run directory (server only)"),
    Option("image-size", 32, "image-folder / multilabel-csv: images resized to image-size x image-size",
           "an integer >= 8 (pixels per side)", lambda v: v >= 8),
    # Training speed on GPUs
    Option("num-workers", 0, "DataLoader worker processes per client",
           "an integer >= 0 (0: read in the training process)", _non_negative),
    Option("amp", "off", "mixed precision: off, bf16 or fp16", "off, bf16 or fp16", lambda v: v in ("off", "bf16", "fp16")),
    Option("channels-last", False, "model and images in channels-last (NHWC) memory format"),
    Option("compile", False, "torch.compile the model's forward (in place)"),
    Option("deterministic", False, "deterministic kernels and cuDNN flags (GPU runs repeat bit for bit)"),
    Option("evaluate-test", True, "false: nothing reads the test split (validation only; tuning runs)"),
    # Long runs: checkpoints, resume, partial participation, failing clients
    Option("checkpoint-every", 5, "write <run dir>/checkpoint.npz every N rounds and after the last; 0 = off",
           "an integer >= 0 (0 = off)", _non_negative),
    Option("resume", "", "run directory to continue from its checkpoint.npz"),
    Option("state-dir", "", "per-node folder for the clients' private state"),
    Option("fraction-evaluate", 1.0, "fraction of clients evaluating their personalized model (PM)",
           "a number in [0, 1]", lambda v: 0 <= v <= 1),
    Option("min-fit-clients", 1, "fewest valid updates a round aggregates; also the smallest fit sample",
           "an integer >= 1", _at_least_one),
    Option("min-available-clients", 1, "clients that must be connected before a round samples",
           "an integer >= 1", _at_least_one),
    Option("on-insufficient-clients", "skip", "a round below min-fit-clients: skip, retry or fail",
           "skip, retry or fail", lambda v: v in ("skip", "retry", "fail")),
    Option("round-retries", 2, "re-samples of a round below min-fit-clients (retry)", "an integer >= 0",
           _non_negative),
    Option("max-update-norm", 0.0, "reject updates with ||w_k - w_global||_2 above this; 0 = no bound",
           "a number >= 0 (0 = no bound)", _non_negative),
)


@functools.cache
def all_options() -> dict[str, Option]:
    """``key -> Option``: the common keys, then each algorithm's own, in declaration order (built once)."""
    declared = list(COMMON_OPTIONS)
    for algorithm in algorithms().values():
        declared.extend(algorithm.options)
    return option_table(declared, "fedapp/config.py and the ALGORITHM declarations in strategies/")


def defaults_set_by(values: Mapping[str, Any]) -> dict[str, Value]:
    """The defaults that the options with ``sets_defaults`` give for their value in ``values``
    (their declared default where ``values`` lacks them); an unknown value sets nothing and fails
    validation later."""
    implied: dict[str, Value] = {}
    for key, option in all_options().items():
        if option.sets_defaults:
            implied.update(option.sets_defaults.get(values.get(key, option.default), {}))
    return implied


def keys_read_by(algorithm: str) -> set[str]:
    """Every run-config key that ``algorithm`` reads: the common keys plus its own and ``also_reads``."""
    declared = algorithms().get(algorithm)
    if declared is None:  # not an algorithm of this checkout: every key may matter
        return set(all_options())
    return {o.key for o in COMMON_OPTIONS} | {o.key for o in declared.options} | set(declared.also_reads)


class RunConfig:
    """Every run-config key with its value, immutable; ``config.weight_decay`` reads ``weight-decay``.

    ``RunConfig(**snake_case_values)`` fills the other keys with their defaults and validates
    nothing (like a dataclass); :meth:`from_run_config` and :meth:`from_kebab` parse and validate.
    """

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        table = all_options()
        by_attribute = {option.attribute: key for key, option in table.items()}
        unknown = sorted(set(values) - set(by_attribute))
        if unknown:
            raise TypeError(f"RunConfig got unknown key(s) {unknown}")
        merged = {key: option.default for key, option in table.items()}
        merged.update({by_attribute[name]: value for name, value in values.items()})
        object.__setattr__(self, "_values", merged)

    # ------------------------------------------------------------- access
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name.replace("_", "-")]
        except KeyError:
            raise AttributeError(f"RunConfig has no key {name.replace('_', '-')!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("RunConfig is immutable; use config.replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        table = all_options()
        changed = {k: v for k, v in self._values.items() if v != table[k].default}
        return f"RunConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __reduce__(self) -> tuple:
        return (_from_snake, (self.to_snake(),))

    # ------------------------------------------------------------- parsing
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's flat run config (kebab-case keys), applying the preset it names."""
        table = all_options()
        defaults = {key: option.default for key, option in table.items()}
        unknown = sorted(set(run_config) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown run-config key(s) {unknown}; allowed keys: {sorted(defaults)}")
        explicit = {k: v for k, v in run_config.items() if v != defaults[k]}
        preset_name = str(run_config.get("preset", "") or "")
        preset = load_preset(preset_name) if preset_name else {}
        values = {**defaults, **defaults_set_by({**preset, **explicit})}
        values.update(preset)
        values.update(explicit)
        return cls.from_kebab(values)

    @classmethod
    def from_kebab(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build and validate from a complete or partial kebab-case mapping.

        A missing key takes its default, or the default that another key's value sets for it.
        """
        table = all_options()
        snake = {}
        for key, value in {**defaults_set_by(values), **values}.items():
            if key not in table:
                raise ConfigError(f"unknown run-config key {key!r}; allowed keys: {sorted(table)}")
            snake[table[key].attribute] = table[key].coerce(value)
        config = cls(**snake)
        config.validate()
        return config

    @classmethod
    def default_values(cls) -> dict[str, Value]:
        """The defaults as a kebab-case mapping (the content of pyproject's run config)."""
        return {key: option.default for key, option in all_options().items()}

    def to_kebab(self) -> dict[str, Value]:
        """The config as the kebab-case mapping Flower and the YAML files use."""
        return dict(self._values)

    def to_snake(self) -> dict[str, Value]:
        """The config as ``attribute -> value`` (the keyword arguments of ``RunConfig``)."""
        return {key.replace("-", "_"): value for key, value in self._values.items()}

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some keys changed (snake_case names)."""
        config = RunConfig(**{**self.to_snake(), **changes})
        config.validate()
        return config

    # ---------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the first key whose value is not allowed."""
        declared = algorithms()
        algorithm_names = tuple(declared)
        for key, option in all_options().items():
            option.validate(self._values[key], algorithm_names if key == "algorithm" else None)
        self._check_shot_split()
        for algorithm in declared.values():
            if algorithm.check is not None:
                algorithm.check(self)

    def _check_shot_split(self) -> None:
        require((self.many_shot_min == 0) == (self.few_shot_max == 0), "few-shot-max", self.few_shot_max,
                "set together with many-shot-min (both 0 unless shot-split=counts)")
        require(
            (self.shot_split == "counts") == (self.many_shot_min > 0 or self.few_shot_max > 0), "shot-split",
            self.shot_split,
            "counts exactly when many-shot-min and few-shot-max are set (> 0); cumulative or thirds with both 0",
        )


def _from_snake(values: dict[str, Value]) -> RunConfig:
    return RunConfig(**values)


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``fedapp/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The kebab-case mapping of preset ``name``; unknown names list the available ones."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset={name!r} does not exist; available: {', '.join(available_presets())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"preset={name!r}: {path} is not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset {path} must be a mapping of run-config keys to values")
    if "preset" in values:
        raise ConfigError(f"preset {path} must not name another preset")
    unknown = sorted(set(values) - set(RunConfig.default_values()))
    if unknown:
        raise ConfigError(f"preset {path} has unknown key(s) {unknown}")
    return values


def pyproject_table() -> str:
    """``[tool.flwr.app.config]`` as TOML, from the declarations: the common keys, then each algorithm's."""
    def toml(value: Value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        return repr(value)

    lines = ["[tool.flwr.app.config]"] + [f"{o.key} = {toml(o.default)}" for o in COMMON_OPTIONS]
    for algorithm in algorithms().values():
        if algorithm.options:
            lines.append(f"# {algorithm.display_name} ({algorithm.strategy.__module__.replace('.', '/')}.py)")
            lines.extend(f"{o.key} = {toml(o.default)}" for o in algorithm.options)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(pyproject_table() + "\n")
