"""Comparison tables in the layout of the papers: (tune,) run a sweep, then tabulate it.

    python -m fedapp.tables SETTING [SETTING ...] --algorithms a,b,c --seeds 3 [--rounds R] [--nodes N]
        [--engine inprocess|flower] [-c "key=value ..."] [--out DIR]
        [--grid "optimizer=sgd,adamw lr=0.01,0.03,0.1" --tune-seed 100 [--tune-rounds R]
         [--tune-settings S ...] [--method-grid "ALG:key=v1,v2"]]

A SETTING is a preset name (``fedapp/presets/<name>.yaml``) or ``default`` (no preset); ``-c``
overrides apply to every run. Every (setting, algorithm, seed) runs once, seeds ``0..seeds-1``,
into ``DIR/runs/<setting>/<algorithm>/seed-<s>`` (a normal run directory), with a progress bar and
one line per finished run (elapsed time, ETA). A rerun of the same command skips finished runs,
continues unfinished ones from their checkpoint, and refuses a finished run with another config
(choose another ``--out``); see :mod:`fedapp.tables.plan`. Ctrl-C stops after saying what is kept.

**Tuning** (``--grid``; :mod:`fedapp.tables.tuning`): first every algorithm runs the same grid with the
tuning seed on one setting per data family, scored on the *validation* split (no test data is
read); then the reporting runs use each method's selected values. The selected values are printed,
shown beside each method in the table, and the last line printed is a JSON object
``{"selected": {"fedavg": {"lr": ..., "optimizer": ...}, ...}, "selected_by": "val_...", ...}``.

Output, in ``DIR``:

- ``table.md``: rows = methods (in ``--algorithms`` order), one column group per setting, mean ± std
  over seeds, twice: **final** (test metrics after the last round) and **best** (test metrics at the
  round with the best *validation* score of the main metric; the test set never selects anything).
  Multi-label settings: macro-AUC, macro-F1, micro-AUC, micro-F1 in percent (FedNCAlign-ML Tables
  1-4). Single-label settings: GM, PM, Many, Med, Few as fractions (FedLoGe Tables 1-2). std is the
  sample standard deviation (ddof = 1) over seeds.
- ``table.csv``: the same numbers in long form, as fractions, with every seed's value.
- ``table_final.png``, ``table_best.png``: grouped bar charts with std error bars.
- with ``--grid``: ``selection.json`` (the JSON line) and ``tuning.csv`` (every grid point's score).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from flwr.common.config import parse_config_args
from flwr.common.logger import FLOWER_LOGGER

from fedapp.config import ConfigError, available_presets
from fedapp.faults import ENV_VAR as FAULTS_ENV_VAR
from fedapp.results import PROJECT_ROOT
from fedapp.tables.plan import NO_PRESET, RunSpec, check_algorithms, check_extra, plan_sweep, resolved_config
from fedapp.tables.render import (
    describe_settings,
    method_labels,
    print_selection,
    tuning_header,
    write_outputs,
    write_tuning,
)
from fedapp.tables.run import SweepInterrupted, run_sweep
from fedapp.tables.tuning import (
    TuningPlan,
    parse_grid,
    parse_method_grids,
    plan_tuning,
    select,
    selection_by_algorithm,
    selection_json,
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fedapp.tables``."""
    parser = argparse.ArgumentParser(prog="python -m fedapp.tables", description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+",
                        help=f"preset names (one column group each) or '{NO_PRESET}'; presets: "
                             f"{', '.join(available_presets())}")
    parser.add_argument("--algorithms", required=True, help="comma-separated, in table row order")
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1 (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="num-server-rounds for every run")
    parser.add_argument("--nodes", type=int, default=10, help="clients per run (default 10)")
    parser.add_argument("--engine", choices=("inprocess", "flower"), default="inprocess",
                        help="inprocess: Flower's server loop in this process (default; cheap); "
                             "flower: python -m fedapp.simulate (flwr run on Ray) per run")
    parser.add_argument("-c", "--run-config", action="append", default=[],
                        help='run-config overrides for every run, e.g. -c "local-epochs=1"')
    parser.add_argument("--out", default="", help="output directory (default outputs/tables/<settings>)")
    parser.add_argument("--table-only", action="store_true", help="do not run anything; tabulate what is there")
    parser.add_argument("--verbose", action="store_true", help="keep Flower's per-round log (inprocess)")
    tuning = parser.add_argument_group("tuning (on the validation split, before the reporting runs)")
    tuning.add_argument("--grid", default="",
                        help='the grid every algorithm gets, e.g. "optimizer=sgd,adamw lr=0.01,0.03,0.1"')
    tuning.add_argument("--method-grid", action="append", default=[],
                        help='a method\'s own keys added to its grid, e.g. "fedprox:mu=0.001,0.01" '
                             "(the budget must stay equal for every algorithm)")
    tuning.add_argument("--tune-seed", type=int, default=None, help="seed of the tuning runs (not a reporting seed)")
    tuning.add_argument("--tune-rounds", type=int, default=None, help="rounds of each tuning run (default --rounds)")
    tuning.add_argument("--tune-settings", nargs="+", default=None,
                        help="settings to tune on, one per data family (default: the first setting of each)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0, 1 (some runs failed), 2 (bad arguments) or 130 (interrupted)."""
    args = build_parser().parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    out = Path(args.out or PROJECT_ROOT / "outputs" / "tables" / "+".join(args.settings)).expanduser().resolve()
    command = "python -m fedapp.tables " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        check_out(out, args.out)
        extra = parse_config_args(args.run_config) if args.run_config else {}
        if args.nodes < 1:
            raise ConfigError(f"--nodes={args.nodes} is not allowed; allowed: an integer >= 1")
        if os.environ.get(FAULTS_ENV_VAR) and not args.table_only:
            raise ConfigError(f"{FAULTS_ENV_VAR}={os.environ[FAULTS_ENV_VAR]!r} is set: tables would be made of runs "
                              "whose clients fail on purpose; unset it (it is a testing aid)")
        tuning = plan_tuning_from_args(args, algorithms, out, extra)
        if tuning is not None:
            plan_sweep(args.settings, algorithms, args.seeds, out, extra, args.rounds)  # fail early, before tuning
            failures = [] if args.table_only else _run(tuning.specs, args, "tuning")
            selections = select(tuning)
            print_selection(tuning, selections, algorithms)
            per_algorithm = {s: selection_by_algorithm(tuning, selections, s) for s in args.settings}
            specs = [spec for setting in args.settings for spec in plan_sweep(
                [setting], [a for a in algorithms if a in per_algorithm[setting]], args.seeds, out, extra,
                args.rounds, per_algorithm[setting])]
            failures += [(spec, "tuning selected nothing: every grid point failed") for spec in tuning.specs
                         if spec.point == tuning.points[spec.algorithm][0]
                         and not math.isfinite(selections[(spec.setting, spec.algorithm)].score)]
        else:
            specs = plan_sweep(args.settings, algorithms, args.seeds, out, extra, args.rounds)
            failures, selections = [], {}
        if not args.table_only:
            failures += _run(specs, args, "tables")
    except SweepInterrupted as stop:
        where = f"; {stop.current.label} keeps its last checkpoint in {stop.current.run_dir}" if stop.current else ""
        print(f"interrupted: {stop.finished} of {stop.total} runs finished and kept{where}; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before any run started; nothing was written", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tuned_keys = sorted({k for sel in selections.values() for k in sel.values})
    header = describe_settings(specs, args.settings, args.seeds, args.nodes, args.engine, command, tuned_keys)
    labels = {}
    if tuning is not None:
        header += tuning_header(tuning)
        labels = method_labels(tuning, selections, algorithms)
    paths = write_outputs(specs, args.settings, algorithms, args.seeds, out, header, labels)
    if tuning is not None:
        paths.update(write_tuning(tuning, selections, out))
    print(paths["markdown"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    for spec, reason in failures:
        print(f"failed: {spec.label}: {reason}", file=sys.stderr)
    if tuning is not None:
        print(json.dumps(selection_json(tuning, selections)))
    return 1 if failures else 0


def check_out(out: Path, given: str) -> None:
    """``--out`` must be a directory that exists or can be created."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out={given or str(out)!r} is a file; allowed: a directory (existing or new)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out={given or str(out)!r} cannot be created ({error.strerror or error}); "
                          "allowed: a writable directory") from None


def plan_tuning_from_args(args: argparse.Namespace, algorithms: Sequence[str], out: Path,
                          extra: dict[str, Any]) -> TuningPlan | None:
    """The tuning plan of ``--grid``/``--method-grid``, or None without them (tuning options refused)."""
    if not args.grid and not args.method_grid:
        given = [name for name, value in (("--tune-seed", args.tune_seed), ("--tune-rounds", args.tune_rounds),
                                          ("--tune-settings", args.tune_settings)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} without --grid is not allowed; add --grid \"key=v1,v2 ...\"")
        return None
    if args.tune_seed is None:
        raise ConfigError("--grid needs --tune-seed (a seed that is not a reporting seed, e.g. 100)")
    if args.seeds < 1:
        raise ConfigError(f"--seeds={args.seeds} is not allowed; allowed: an integer >= 1")
    rounds = args.tune_rounds or args.rounds or resolved_config(dict(extra)).num_server_rounds
    if rounds < 1:
        raise ConfigError(f"--tune-rounds={rounds} is not allowed; allowed: an integer >= 1")
    check_extra(extra)
    check_algorithms(args.settings, algorithms)
    return plan_tuning(args.settings, algorithms, parse_grid(args.grid), parse_method_grids(args.method_grid),
                       args.tune_seed, list(range(args.seeds)), rounds, out, extra, args.tune_settings)


def _run(specs: Sequence[RunSpec], args: argparse.Namespace, title: str) -> list[tuple[RunSpec, str]]:
    """Run the sweep, with Flower's per-round log off unless ``--verbose``."""
    if args.engine == "inprocess" and not args.verbose:
        FLOWER_LOGGER.setLevel(logging.WARNING)  # the sweep's own lines are the progress
    return run_sweep(specs, args.nodes, args.engine, title=title)
