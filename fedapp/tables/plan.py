"""What runs a sweep needs: one validated run per (setting, algorithm, seed[, grid point]), and
what each run directory already holds.

- **Plan** (:func:`plan_sweep`): every run is validated before anything runs; a bad key, a preset
  name or an override a preset would swallow fails at once.
- **Resume** (:func:`run_state`, :func:`resumable_round`): a run directory is *done* when its
  ``summary.json`` exists (with ``status`` ``completed`` or no ``status``) under the same config; a
  finished run with another config is an error, except fewer ``num-server-rounds``: such a run is
  continued from its last checkpoint to the new number of rounds (what an uninterrupted run of that
  many rounds gives). An unfinished one (no summary, or a ``status`` such as ``failed`` /
  ``interrupted``) continues from its ``checkpoint.npz`` (``resume=<run dir>``) when it has a
  readable checkpoint short of the last round; otherwise it is moved aside to
  ``<run dir>.unfinished-<k>`` (:func:`set_aside`) and started again, so no run directory is ever
  deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from fedapp.checkpoint import CheckpointError, load_checkpoint
from fedapp.config import ConfigError, RunConfig, keys_read_by, load_preset
from fedapp.data import load_dataset
from fedapp.registry import algorithms as declared_algorithms
from fedapp.registry import get_algorithm

NO_PRESET = "default"
SWEEP_MARKER = "sweep-run.json"  # written into a run directory when its run finished: {nodes, engine}
RESERVED = ("algorithm", "seed", "output-dir", "preset")  # set by the runner for each run
COMPLETED = "completed"  # summary.json "status" of a finished run (absent in runs that predate the field)


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its place in the table, its run config overrides and directory."""

    setting: str
    algorithm: str
    seed: int
    overrides: dict[str, Any]
    run_dir: Path
    point: dict[str, Any] = field(default_factory=dict)  # the grid point of a tuning run ({} otherwise)

    @property
    def label(self) -> str:
        grid = " ".join(f"{k}={v}" for k, v in self.point.items())
        return f"{self.setting} {self.algorithm} seed={self.seed}" + (f" [{grid}]" if grid else "")


# ------------------------------------------------------------------------------------------ plan
def setting_overrides(setting: str) -> dict[str, Any]:
    """The run-config overrides a setting name stands for (``default``: none)."""
    if setting == NO_PRESET:
        return {}
    load_preset(setting)  # fails now, listing the available presets, if the name is unknown
    return {"preset": setting}


def resolved_config(overrides: dict[str, Any]) -> RunConfig:
    """The validated config of one run, as the ServerApp will resolve it."""
    return RunConfig.from_run_config({**RunConfig.default_values(), **overrides})


def check_overrides_apply(config: RunConfig, extra: dict[str, Any]) -> None:
    """Under a preset, an override equal to the key's *default* is ignored (see fedapp.config): refuse it."""
    resolved = config.to_kebab()
    for key, value in extra.items():
        if key in resolved and resolved[key] != value:
            raise ConfigError(
                f"-c {key}={value!r} does not take effect under preset {config.preset!r} (it resolves to "
                f"{resolved[key]!r}: a value equal to the default does not override a preset); "
                "use a preset without this key or setting 'default'"
            )


def check_algorithms(settings: Sequence[str], algorithms: Sequence[str]) -> None:
    """Non-empty, no repeats, every algorithm implemented: fails before anything runs."""
    if not algorithms:
        raise ConfigError("--algorithms is empty; give a comma-separated list of "
                          f"{', '.join(sorted(declared_algorithms()))}")
    if len(set(algorithms)) != len(algorithms) or len(set(settings)) != len(settings):
        raise ConfigError("--algorithms and the settings must not repeat a name")
    for algorithm in algorithms:
        get_algorithm(algorithm)  # unknown or not yet implemented: clear error now, not mid-sweep


def check_extra(extra: dict[str, Any]) -> None:
    """``-c`` must not set what the runner sets per run."""
    reserved = sorted(set(extra) & set(RESERVED))
    if reserved:
        raise ConfigError(f"-c must not set {reserved}: the table runner sets them per run "
                          "(use the positional settings, --algorithms and --seeds)")


def resolved_task(setting: str) -> str:
    """``multilabel`` or ``singlelabel``: the task of the dataset a setting resolves to."""
    return load_dataset(resolved_config(setting_overrides(setting))).task


def plan_run(setting: str, algorithm: str, seed: int, run_dir: Path, extra: dict[str, Any],
             point: dict[str, Any] | None = None) -> RunSpec:
    """One validated run: setting < ``extra`` (-c, rounds, selected values) < algorithm/seed/dir."""
    overrides = {**setting_overrides(setting), **extra, "algorithm": algorithm, "seed": seed,
                 "output-dir": str(run_dir.resolve())}
    check_overrides_apply(resolved_config(overrides), extra)
    return RunSpec(setting, algorithm, seed, overrides, run_dir.resolve(), dict(point or {}))


def plan_sweep(
    settings: Sequence[str], algorithms: Sequence[str], seeds: int | Sequence[int], out: Path,
    extra: dict[str, Any] | None = None, rounds: int | None = None,
    per_algorithm: dict[str, dict[str, Any]] | None = None,
) -> list[RunSpec]:
    """Every (setting, seed, algorithm) run, validated; seed-major so an interrupted sweep is balanced.

    ``seeds``: a count (seeds ``0..n-1``) or the seeds themselves. ``per_algorithm``: overrides of
    one algorithm (e.g. its selected optimizer and lr), applied over ``extra``.
    """
    extra = dict(extra or {})
    check_extra(extra)
    if rounds is not None:
        extra["num-server-rounds"] = rounds
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or (isinstance(seeds, int) and seeds < 1):
        raise ConfigError(f"--seeds={seeds} is not allowed; allowed: an integer >= 1")
    check_algorithms(settings, algorithms)
    specs = []
    for setting in settings:
        for seed in seed_list:
            for algorithm in algorithms:
                run_dir = out / "runs" / setting / algorithm / f"seed-{seed}"
                own = {**extra, **(per_algorithm or {}).get(algorithm, {})}
                specs.append(plan_run(setting, algorithm, seed, run_dir, own))
    return specs


# ------------------------------------------------------------------------------------- run state
def summary_status(run_dir: Path) -> str | None:
    """``completed`` (or another ``status``) of a run's summary.json; None if there is no summary."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return "unreadable"
    return str(summary.get("status", COMPLETED))


def config_mismatch(spec: RunSpec, ignore: Sequence[str] = ()) -> str | None:
    """Why the run in ``spec.run_dir`` is not a run of ``spec`` (first differing key), or None."""
    config_path = spec.run_dir / "config.yaml"
    expected = resolved_config(spec.overrides).to_kebab()
    found = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    defaults = RunConfig.default_values()
    # A key missing there was added to the project after that run: fine if this sweep keeps its default.
    # A key only other algorithms read (e.g. fedlgt-layers for a FedAvg run) never touched that run.
    compared = keys_read_by(expected["algorithm"]) - {"output-dir", "resume", *ignore}
    differing = sorted(k for k in expected if k in compared and found.get(k, defaults[k]) != expected[k])
    if not differing:
        return None
    key = differing[0]
    return f"{key}: {found.get(key)!r} there, {expected[key]!r} now"


def run_state(spec: RunSpec, nodes: int) -> str:
    """``done`` (finished with this config), ``partial`` (started, unfinished) or ``new``."""
    if not spec.run_dir.exists():
        return "new"
    status = summary_status(spec.run_dir)
    if status != COMPLETED:
        return "partial"
    mismatch = config_mismatch(spec)
    if mismatch and extendable(spec):
        return "partial"  # the same run with fewer rounds: continued from its last checkpoint
    if mismatch:
        raise ConfigError(f"{spec.run_dir} holds a finished run with another config ({mismatch}); "
                          "choose another --out")
    marker = spec.run_dir / SWEEP_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("nodes") != nodes:
        raise ConfigError(f"{spec.run_dir} was run with nodes={json.loads(marker.read_text()).get('nodes')}, "
                          f"not {nodes}; choose another --out")
    return "done"


def resumable_round(spec: RunSpec) -> int | None:
    """The round of the unfinished run's readable checkpoint if it can be continued, else None.

    A run with fewer ``num-server-rounds`` but otherwise the same config counts: resuming it to
    more rounds gives what an uninterrupted run of that many rounds gives.
    """
    try:
        checkpoint = load_checkpoint(spec.run_dir)
    except CheckpointError:
        return None
    rounds = resolved_config(spec.overrides).num_server_rounds
    if checkpoint.server_round >= rounds or config_mismatch(spec, ignore=("num-server-rounds",)) is not None:
        return None
    return checkpoint.server_round


def extendable(spec: RunSpec) -> bool:
    """A finished run of ``spec``'s config but fewer rounds, whose last checkpoint can be continued."""
    config_path = spec.run_dir / "config.yaml"
    found = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    rounds = resolved_config(spec.overrides).num_server_rounds
    done = found.get("num-server-rounds")
    return isinstance(done, int) and done < rounds and resumable_round(spec) == done


def set_aside(run_dir: Path) -> Path:
    """Move an unfinished run that cannot be continued to ``<run dir>.unfinished-<k>``; returns it."""
    k = 1
    while (target := run_dir.with_name(f"{run_dir.name}.unfinished-{k}")).exists():
        k += 1
    run_dir.rename(target)
    return target
