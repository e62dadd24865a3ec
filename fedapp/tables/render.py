"""The tables of a sweep: its finished runs tabulated (mean ± std over seeds per setting, method and
metric) and rendered as markdown, CSV and bar charts, with the tuning selection beside them.

Every method's display name comes from :func:`display_name`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedapp.config import RunConfig
from fedapp.registry import algorithms
from fedapp.registry import display_name as declared_display_name
from fedapp.tables.plan import COMPLETED, RunSpec, resolved_config, resolved_task, summary_status
from fedapp.tables.tuning import Selection, TuningPlan, selection_json

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


def display_name(algorithm: str) -> str:
    """The name a table shows for ``algorithm`` (its declaration's ``display_name``); unknown names as given."""
    return declared_display_name(algorithm)


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


# ----------------------------------------------------------------------------------------- render
def format_cell(record: dict[str, Any], expected_seeds: int) -> str:
    """``12.34 ± 0.56`` in the task's unit; ``–`` for no value, ``(n=k)`` for fewer seeds than expected."""
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
    """The records in long form, as fractions, with every seed's value."""
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
    # Lazy: pyplot costs about 0.5 s to import, and only the charts need it (the benchmarks import
    # this package for its numbers).
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


# ----------------------------------------------------------------------------------------- tuning
def format_values(values: dict[str, Any]) -> str:
    """``optimizer=sgd, lr=0.1``."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def print_selection(plan: TuningPlan, selections: dict[tuple[str, str], Selection], algorithms: Sequence[str]) -> None:
    """One ``[tuning] SETTING ALGORITHM: selected ...`` line per tuning setting and algorithm."""
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
    """The table header's line on how tuning ran."""
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) or math.isinf(value) else repr(value)

