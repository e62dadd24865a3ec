"""The tuning phase of the table runner: the grid, the tuning runs, and the selection each method
gets (one grid for every method, scored on the validation split).

    python -m fedapp.tables SETTING... --algorithms A,B --grid "optimizer=sgd,adamw lr=0.01,0.03,0.1" \
        --tune-seed 100 --seeds 3 --rounds 30 [--tune-rounds R] [--tune-settings S...] \
        [--method-grid "fedprox:mu=0.001,0.01,0.1"]

Protocol (see docs/results/PROTOCOL.md):

- Every algorithm runs every point of the same ``--grid`` (the Cartesian product of the listed
  values) on each tuning setting, once, with ``--tune-seed``, which must not be one of the
  reporting seeds ``0..seeds-1``; for ``--tune-rounds`` rounds (default: ``--rounds``).
- ``--method-grid ALG:key=v1,v2`` adds a method's own key (e.g. FedProx's ``mu``) to that method's
  grid. The tuning budget (points x settings x rounds) must be the same for every algorithm, or
  the command refuses.
- Tuning runs have ``evaluate-test=false``: the server evaluates the validation split only and
  clients build no local test set, so nothing in this phase reads the test split.
- Score of a grid point: the validation main metric (``val_macro_auc`` multi-label,
  ``val_accuracy`` single-label) **at the last tuning round**; ties go to ``val_macro_f1``
  (multi-label), then to the earlier grid point. A failed run scores -inf.
- Tuning settings: by default the first of the reporting settings of each data family (its
  ``dataset``); the values selected there are used for every reporting setting of that family.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fedapp.config import ConfigError, RunConfig
from fedapp.tables.plan import RESERVED, RunSpec, plan_run, resolved_config, resolved_task, setting_overrides

# Keys a grid must not set: the runner sets them per run, or they would change what is measured.
NOT_TUNABLE = set(RESERVED) | {"num-server-rounds", "evaluate-test", "resume", "dataset", "num-partitions"}
SCORE = {"multilabel": ("val_macro_auc", "val_macro_f1"), "singlelabel": ("val_accuracy", None)}
TUNE_OVERRIDES = {"evaluate-test": False}


@dataclass(frozen=True)
class Selection:
    """What tuning chose for one (tuning setting, algorithm), with every point's score."""

    setting: str
    algorithm: str
    values: dict[str, Any]
    score: float
    scores: list[tuple[dict[str, Any], float]]


# ------------------------------------------------------------------------------------------ grid
def parse_value(text: str) -> Any:
    """``0.01`` -> float, ``3`` -> int, ``true`` -> bool, anything else a string (quotes optional)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``"optimizer=sgd,adamw lr=0.01,0.1"`` -> ``{"optimizer": ["sgd", "adamw"], "lr": [0.01, 0.1]}``."""
    grid: dict[str, list[Any]] = {}
    defaults = RunConfig.default_values()
    for item in text.split():
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid item {item!r} is not allowed; allowed: key=v1,v2,... "
                              "(e.g. \"optimizer=sgd,adamw lr=0.01,0.03,0.1\")")
        if key not in defaults:
            raise ConfigError(f"--grid key {key!r} is not a run-config key; allowed keys: {sorted(defaults)}")
        if key in NOT_TUNABLE:
            raise ConfigError(f"--grid key {key!r} is not allowed: the runner sets it "
                              f"(not tunable: {', '.join(sorted(NOT_TUNABLE))})")
        if key in grid:
            raise ConfigError(f"--grid names {key!r} twice")
        parsed = [parse_value(v) for v in values.split(",") if v != ""]
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"--grid {key}={values} repeats a value")
        grid[key] = parsed
    return grid


def parse_method_grids(items: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """``["fedprox:mu=0.001,0.01"]`` -> ``{"fedprox": {"mu": [0.001, 0.01]}}``."""
    grids: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        algorithm, sep, rest = item.partition(":")
        if not sep or not rest:
            raise ConfigError(f"--method-grid {item!r} is not allowed; allowed: ALGORITHM:key=v1,v2 ...")
        grids.setdefault(algorithm, {}).update(parse_grid(rest))
    return grids


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid, in the order the keys and values were given."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] if keys else [{}]


def point_slug(point: dict[str, Any]) -> str:
    """A directory name for a grid point: ``optimizer=sgd,lr=0.01``."""
    text = ",".join(f"{k}={v}" for k, v in point.items()) or "defaults"
    return re.sub(r"[^A-Za-z0-9=.,_+-]", "_", text)


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class TuningPlan:
    """The tuning runs and how their selections map onto the reporting settings."""

    specs: list[RunSpec]
    tune_settings: list[str]
    family_of: dict[str, str]  # setting -> data family (its dataset)
    tuned_on: dict[str, str]  # reporting setting -> the tuning setting whose selection it uses
    points: dict[str, list[dict[str, Any]]]  # algorithm -> its grid points
    rounds: int
    seed: int

    def budget(self, algorithm: str) -> str:
        """``12 runs x 30 rounds``: the tuning runs of one algorithm."""
        runs = len(self.points[algorithm]) * len(self.tune_settings)
        return f"{runs} runs x {self.rounds} rounds"


def family(setting: str, extra: dict[str, Any]) -> str:
    """The data family of a setting: the dataset it resolves to."""
    return resolved_config({**setting_overrides(setting), **extra}).dataset


def plan_tuning(
    settings: Sequence[str], algorithms: Sequence[str], grid: dict[str, list[Any]],
    method_grids: dict[str, dict[str, list[Any]]], tune_seed: int, reporting_seeds: Sequence[int],
    rounds: int, out: Path, extra: dict[str, Any], tune_settings: Sequence[str] | None = None,
) -> TuningPlan:
    """Every tuning run, validated; refuses a tuning seed that reports, or unequal budgets."""
    if tune_seed in reporting_seeds:
        raise ConfigError(f"--tune-seed={tune_seed} is not allowed: it is a reporting seed "
                          f"({', '.join(map(str, reporting_seeds))}); allowed: any other integer >= 0, e.g. 100")
    if tune_seed < 0:
        raise ConfigError(f"--tune-seed={tune_seed} is not allowed; allowed: an integer >= 0")
    unknown = sorted(set(method_grids) - set(algorithms))
    if unknown:
        raise ConfigError(f"--method-grid names {unknown}, which are not in --algorithms")
    for algorithm, own in method_grids.items():
        shared = sorted(set(own) & set(grid))
        if shared:
            raise ConfigError(f"--method-grid {algorithm}: {shared} already in --grid")
    points = {a: grid_points({**grid, **method_grids.get(a, {})}) for a in algorithms}
    sizes = {a: len(p) for a, p in points.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError("the tuning budget must be the same for every algorithm; grid points: "
                          + ", ".join(f"{a} {n}" for a, n in sizes.items())
                          + " (give every algorithm a --method-grid of the same size, or none)")
    family_of = {s: family(s, extra) for s in settings}
    chosen = list(tune_settings) if tune_settings else []
    if not chosen:
        for setting in settings:
            if family_of[setting] not in {family_of[c] for c in chosen}:
                chosen.append(setting)
    for setting in chosen:
        family_of.setdefault(setting, family(setting, extra))
    tuned_on = {}
    for setting in settings:
        match = [c for c in chosen if family_of[c] == family_of[setting]]
        if not match:
            raise ConfigError(f"no --tune-settings setting of data family {family_of[setting]!r} "
                              f"(needed by {setting!r}); tuning settings: {', '.join(chosen)}")
        if len(match) > 1:
            raise ConfigError(f"--tune-settings has two settings of data family {family_of[setting]!r}: "
                              f"{', '.join(match)}; give one per family")
        tuned_on[setting] = match[0]
    specs = []
    for setting in chosen:
        for algorithm in algorithms:
            for point in points[algorithm]:
                run_dir = out / "tune" / setting / algorithm / point_slug(point)
                overrides = {**extra, "num-server-rounds": rounds, **TUNE_OVERRIDES, **point}
                specs.append(plan_run(setting, algorithm, tune_seed, run_dir, overrides, point))
    return TuningPlan(specs, chosen, family_of, tuned_on, points, rounds, tune_seed)


# ------------------------------------------------------------------------------------- selection
def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, up to a torn last line."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a torn last line of an interrupted run
    return rows


def score(run_dir: Path, task: str, rounds: int) -> tuple[float, float]:
    """(validation main metric, tie-break) at the last tuning round; -inf if the run did not finish it."""
    main, tie = SCORE[task]
    rows = [r for r in read_rows(run_dir) if r.get("round") == rounds]
    if not rows or not _finite(rows[-1].get(main)):
        return -math.inf, -math.inf
    last = rows[-1]
    return float(last[main]), float(last[tie]) if tie and _finite(last.get(tie)) else -math.inf


def select(plan: TuningPlan) -> dict[tuple[str, str], Selection]:
    """``(tuning setting, algorithm) -> Selection``: the best-scoring grid point (first on ties)."""
    result: dict[tuple[str, str], Selection] = {}
    tasks = {s: resolved_task(s) for s in plan.tune_settings}
    by_key: dict[tuple[str, str], list[RunSpec]] = {}
    for spec in plan.specs:
        by_key.setdefault((spec.setting, spec.algorithm), []).append(spec)
    for (setting, algorithm), specs in by_key.items():
        scored = [(spec.point, score(spec.run_dir, tasks[setting], plan.rounds)) for spec in specs]
        best_index = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
        values, (best, _) = scored[best_index]
        result[(setting, algorithm)] = Selection(setting, algorithm, dict(values), best,
                                                 [(p, s[0]) for p, s in scored])
    return result


def selection_by_algorithm(plan: TuningPlan, selections: dict[tuple[str, str], Selection],
                           setting: str) -> dict[str, dict[str, Any]]:
    """The selected values each algorithm uses on reporting ``setting`` (unselectable: omitted)."""
    tuned = plan.tuned_on[setting]
    return {algorithm: dict(sel.values) for (s, algorithm), sel in selections.items()
            if s == tuned and math.isfinite(sel.score)}


def selected_by(plan: TuningPlan) -> str:
    """``val_macro_auc@final`` etc.: what the selection maximised."""
    names = []
    for setting in plan.tune_settings:
        main, tie = SCORE[resolved_task(setting)]
        name = f"{main}@final" + (f" (ties: {tie})" if tie else "")
        if name not in names:
            names.append(name)
    return "; ".join(names)


def selection_json(plan: TuningPlan, selections: dict[tuple[str, str], Selection]) -> dict[str, Any]:
    """``{"selected": {alg: values}, "selected_by": ..., ...}``; per tuning setting if there are several."""
    per_setting: dict[str, dict[str, Any]] = {}
    for (setting, algorithm), sel in selections.items():
        per_setting.setdefault(setting, {})[algorithm] = dict(sel.values) if math.isfinite(sel.score) else None
    selected: dict[str, Any] = per_setting[plan.tune_settings[0]] if len(plan.tune_settings) == 1 else per_setting
    return {
        "selected": selected,
        "selected_by": selected_by(plan),
        "tuned_on": plan.tune_settings,
        "tune_seed": plan.seed,
        "tune_rounds": plan.rounds,
        "budget_per_algorithm": {a: plan.budget(a) for a in plan.points},
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
