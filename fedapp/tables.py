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
(choose another ``--out``); see :mod:`fedapp.sweep`. Ctrl-C stops after saying what is kept.

**Tuning** (``--grid``; :mod:`fedapp.tuning`): first every algorithm runs the same grid with the
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
import csv
import io
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedapp.config import ConfigError, RunConfig, available_presets
from fedapp.registry import algorithms, display_name
from fedapp.results import PROJECT_ROOT
from fedapp.sweep import (  # noqa: F401 - RunSpec, execute, run_state: part of this module's API (benchmarks)
    COMPLETED,
    NO_PRESET,
    RunSpec,
    SweepInterrupted,
    execute,
    plan_sweep,
    resolved_config,
    run_state,
    run_sweep,
    setting_overrides,
    summary_status,
)
from fedapp.tuning import (
    Selection,
    TuningPlan,
    parse_grid,
    parse_method_grids,
    plan_tuning,
    select,
    selection_by_algorithm,
    selection_json,
)

SELECTIONS = ("final", "best")
SELECTION_TITLES = {
    "final": "Final: test metrics after the last round",
    "best": "Best: test metrics at the round with the best validation score (validation-selected)",
}
# (metric key in summary.json, column header), in the papers' column order
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "multilabel": (("macro_auc", "macro-AUC"), ("macro_f1", "macro-F1"), ("micro_auc", "micro-AUC"),
                   ("micro_f1", "micro-F1")),
    "singlelabel": (("gm", "GM"), ("pm", "PM"), ("many", "Many"), ("medium", "Med"), ("few", "Few")),
}
DISPLAY = {"multilabel": (100.0, 2), "singlelabel": (1.0, 4)}  # percent like FedNCAlign-ML; FedLoGe fractions
GLOBAL_MODEL_METRICS = ("gm", "many", "medium", "few")  # single-label columns measured on the global model


# --------------------------------------------------------------------------------------- tabulate
def collect(specs: Sequence[RunSpec]) -> dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]:
    """``(setting, algorithm) -> [(seed, summary)]`` for the finished runs."""
    table: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for spec in specs:
        path = spec.run_dir / "summary.json"
        if summary_status(spec.run_dir) == COMPLETED:  # failed or interrupted runs stay out of the table
            table.setdefault((spec.setting, spec.algorithm), []).append((spec.seed, json.loads(path.read_text())))
    return table


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def table_cells(
    specs: Sequence[RunSpec], settings: Sequence[str], algorithms: Sequence[str]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The task of each setting, and one record per (selection, setting, algorithm, metric)."""
    runs = collect(specs)
    tasks = {}
    for setting in settings:
        found = {s["task"] for (name, _), pairs in runs.items() if name == setting for _, s in pairs}
        if len(found) > 1:
            raise ValueError(f"setting {setting!r} mixes multi-label and single-label runs")
        tasks[setting] = found.pop() if found else resolved_task(setting)
    records = []
    for selection in SELECTIONS:
        for setting in settings:
            for algorithm in algorithms:
                pairs = sorted(runs.get((setting, algorithm), []), key=lambda pair: pair[0])
                for metric, header in COLUMNS[tasks[setting]]:
                    # No global model (FedPer, FedRep): its GM columns stay empty and print "–".
                    counted = pairs if metric not in GLOBAL_MODEL_METRICS or has_global_model(algorithm) else []
                    found = [(seed, s.get(selection, {}).get(metric)) for seed, s in counted]
                    seeds = [seed for seed, value in found if _is_number(value)]
                    values = [float(value) for _, value in found if _is_number(value)]
                    mean, std = mean_std(values)
                    records.append(dict(selection=selection, setting=setting, task=tasks[setting],
                                        algorithm=algorithm, metric=metric, header=header, mean=mean, std=std,
                                        n=len(values), seeds=seeds, values=values))
    return tasks, records


def has_global_model(algorithm: str) -> bool:
    """False for methods without a global model (FedPer, FedRep: no global head); unknown names: True."""
    declared = algorithms().get(algorithm)
    return declared is None or declared.strategy.has_global_model


def resolved_task(setting: str) -> str:
    from fedapp.data import load_dataset

    return load_dataset(resolved_config(setting_overrides(setting))).task


def format_cell(record: dict[str, Any], expected_seeds: int) -> str:
    scale, decimals = DISPLAY[record["task"]]
    if record["n"] == 0:
        return "–"
    text = f"{record['mean'] * scale:.{decimals}f}"
    text += " ± –" if math.isnan(record["std"]) else f" ± {record['std'] * scale:.{decimals}f}"
    if record["n"] < expected_seeds:
        text += f" (n={record['n']})"
    return text


def markdown(records: list[dict[str, Any]], settings: Sequence[str], algorithms: Sequence[str],
             tasks: dict[str, str], seeds: int, header_lines: Sequence[str],
             method_labels: dict[str, str] | None = None) -> str:
    """Both selections as markdown tables; ``method_labels`` overrides a row's name (e.g. with its tuned values)."""
    labels = method_labels or {}
    lines = list(header_lines)
    for selection in SELECTIONS:
        lines += ["", f"### {SELECTION_TITLES[selection]}", ""]
        head = ["Method"]
        for setting in settings:
            unit = " (%)" if tasks[setting] == "multilabel" else ""
            head += [f"{setting}: {header}{unit}" for _, header in COLUMNS[tasks[setting]]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        index = {(r["selection"], r["setting"], r["algorithm"], r["metric"]): r for r in records}
        for algorithm in algorithms:
            cells = [labels.get(algorithm, display_name(algorithm))]
            for setting in settings:
                cells += [format_cell(index[(selection, setting, algorithm, metric)], seeds)
                          for metric, _ in COLUMNS[tasks[setting]]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["selection", "setting", "task", "algorithm", "metric", "mean", "std", "n", "seeds", "values"])
    for r in records:
        writer.writerow([r["selection"], r["setting"], r["task"], r["algorithm"], r["metric"],
                         _csv_number(r["mean"]), _csv_number(r["std"]), r["n"],
                         ";".join(str(s) for s in r["seeds"]), ";".join(repr(v) for v in r["values"])])
    path.write_text(buffer.getvalue())


def bar_chart(records: list[dict[str, Any]], settings: Sequence[str], algorithms: Sequence[str],
              tasks: dict[str, str], selection: str, path: Path) -> Path:
    """One panel per setting: groups = metrics, bars = methods, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings), figsize=(1.2 + 4.8 * len(settings), 4.2), squeeze=False)
    width = 0.8 / max(len(algorithms), 1)
    # tab10 repeats after 10 methods (FedLoGe got FedAvg's blue): tab20 keeps up to 20 distinct.
    palette = plt.get_cmap("tab10" if len(algorithms) <= 10 else "tab20").colors
    index = {(r["selection"], r["setting"], r["algorithm"], r["metric"]): r for r in records}
    for ax, setting in zip(axes[0], settings):
        columns = COLUMNS[tasks[setting]]
        scale, _ = DISPLAY[tasks[setting]]
        for k, algorithm in enumerate(algorithms):
            cells = [index[(selection, setting, algorithm, metric)] for metric, _ in columns]
            means = [c["mean"] * scale if c["n"] else 0.0 for c in cells]
            errors = [0.0 if math.isnan(c["std"]) else c["std"] * scale for c in cells]
            positions = np.arange(len(columns)) + (k - (len(algorithms) - 1) / 2) * width
            ax.bar(positions, means, width, yerr=errors, capsize=2, color=palette[k % len(palette)],
                   label=display_name(algorithm))
        ax.set_xticks(np.arange(len(columns)), [header for _, header in columns])
        ax.set_ylabel("%" if tasks[setting] == "multilabel" else "accuracy")
        ax.set_title(f"{setting} ({selection})")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = math.ceil(len(algorithms) / 6)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(algorithms), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))  # room for the legend below the panels, off the bars
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(specs: Sequence[RunSpec], settings: Sequence[str], algorithms: Sequence[str], seeds: int,
                  out: Path, header_lines: Sequence[str], method_labels: dict[str, str] | None = None
                  ) -> dict[str, Path]:
    """table.md, table.csv and the bar charts in ``out``; returns their paths."""
    tasks, records = table_cells(specs, settings, algorithms)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "table.md", "csv": out / "table.csv"}
    paths["markdown"].write_text(markdown(records, settings, algorithms, tasks, seeds, header_lines, method_labels))
    write_csv(records, paths["csv"])
    for selection in SELECTIONS:
        paths[f"chart_{selection}"] = bar_chart(records, settings, algorithms, tasks, selection,
                                                out / f"table_{selection}.png")
    return paths


def describe_settings(specs: Sequence[RunSpec], settings: Sequence[str], seeds: int, nodes: int,
                      engine: str, command: str, tuned: Sequence[str] = ()) -> list[str]:
    """The table's header: command, budget, and what each setting resolves to (keys off their default).

    ``tuned``: keys set per method by tuning (shown beside each method, not here).
    """
    defaults = RunConfig.default_values()
    lines = [f"<!-- generated by: {command} -->",
             f"Seeds {', '.join(str(s) for s in range(seeds))}; {nodes} clients; engine {engine}. "
             "Cells: mean ± sample std (ddof=1) over seeds; (n=k) marks cells with fewer finished seeds."]
    for setting in settings:
        spec = next(s for s in specs if s.setting == setting)
        config = resolved_config(spec.overrides).to_kebab()
        changed = {k: v for k, v in config.items()
                   if k not in ("algorithm", "seed", "output-dir", "preset", *tuned) and v != defaults[k]}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "all defaults"
        lines.append(f"- **{setting}**: {shown}; rounds={config['num-server-rounds']}, "
                     f"local-epochs={config['local-epochs']}")
    return lines


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
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
    args = build_parser().parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    out = Path(args.out or PROJECT_ROOT / "outputs" / "tables" / "+".join(args.settings)).expanduser().resolve()
    command = "python -m fedapp.tables " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        check_out(out, args.out)
        from flwr.common.config import parse_config_args

        extra = parse_config_args(args.run_config) if args.run_config else {}
        if args.nodes < 1:
            raise ConfigError(f"--nodes={args.nodes} is not allowed; allowed: an integer >= 1")
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
    from fedapp.sweep import check_algorithms, check_extra

    check_extra(extra)
    check_algorithms(args.settings, algorithms)
    return plan_tuning(args.settings, algorithms, parse_grid(args.grid), parse_method_grids(args.method_grid),
                       args.tune_seed, list(range(args.seeds)), rounds, out, extra, args.tune_settings)


def format_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def print_selection(plan: TuningPlan, selections: dict[tuple[str, str], Selection], algorithms: Sequence[str]) -> None:
    for setting in plan.tune_settings:
        for algorithm in algorithms:
            sel = selections[(setting, algorithm)]
            shown = format_values(sel.values) if math.isfinite(sel.score) else "nothing (every grid point failed)"
            print(f"[tuning] {setting} {algorithm}: selected {shown} (score {sel.score:.4f})", flush=True)


def method_labels(plan: TuningPlan, selections: dict[tuple[str, str], Selection],
                  algorithms: Sequence[str]) -> dict[str, str]:
    """``FedAvg (optimizer=sgd, lr=0.1)``; with several tuning settings, one group per setting."""
    labels = {}
    for algorithm in algorithms:
        name = display_name(algorithm)
        parts = []
        for setting in plan.tune_settings:
            sel = selections[(setting, algorithm)]
            shown = format_values(sel.values) if math.isfinite(sel.score) else "not selected"
            parts.append(shown if len(plan.tune_settings) == 1 else f"{setting}: {shown}")
        labels[algorithm] = f"{name} ({'; '.join(parts)})"
    return labels


def tuning_header(plan: TuningPlan) -> list[str]:
    budgets = sorted({plan.budget(a) for a in plan.points})
    return [f"- **Tuning**: every method ran its grid on {', '.join(plan.tune_settings)} with seed {plan.seed} "
            f"(not a reporting seed), {plan.rounds} rounds, validation split only (evaluate-test=false); "
            f"selected on the validation main metric at the last tuning round; budget per method: "
            f"{', '.join(budgets)}. The selected values are shown beside each method."]


def write_tuning(plan: TuningPlan, selections: dict[tuple[str, str], Selection], out: Path) -> dict[str, Path]:
    """``selection.json`` and ``tuning.csv`` (every grid point's validation score)."""
    paths = {"selection": out / "selection.json", "tuning_csv": out / "tuning.csv"}
    paths["selection"].write_text(json.dumps(selection_json(plan, selections), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "algorithm", "point", "score", "selected"])
    for (setting, algorithm), sel in selections.items():
        for point, value in sel.scores:
            writer.writerow([setting, algorithm, format_values(point), _csv_number(value),
                             int(point == sel.values and math.isfinite(sel.score))])
    paths["tuning_csv"].write_text(buffer.getvalue())
    return paths


def _run(specs: Sequence[RunSpec], args: argparse.Namespace, title: str) -> list[tuple[RunSpec, str]]:
    if args.engine == "inprocess" and not args.verbose:
        from flwr.common.logger import FLOWER_LOGGER

        FLOWER_LOGGER.setLevel(logging.WARNING)  # the sweep's own lines are the progress
    return run_sweep(specs, args.nodes, args.engine, title=title)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) or math.isinf(value) else repr(value)


if __name__ == "__main__":
    sys.exit(main())
