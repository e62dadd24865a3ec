"""Comparison tables in the layout of the papers: run a sweep, then tabulate it.

    python -m fedapp.tables SETTING [SETTING ...] --algorithms a,b,c --seeds 3 [--rounds R] [--nodes N]
        [--engine inprocess|flower] [-c "key=value ..."] [--out DIR]

A SETTING is a preset name (``fedapp/presets/<name>.yaml``) or ``default`` (no preset); ``-c``
overrides apply to every run. Every (setting, algorithm, seed) runs once, seeds ``0..seeds-1``,
into ``DIR/runs/<setting>/<algorithm>/seed-<s>`` (a normal run directory). The sweep prints one line
per run with the elapsed time and an ETA, and resumes: runs whose ``summary.json`` exists with the
same config are skipped, unfinished ones are rerun, and a finished run with another config is an
error (choose another ``--out``).

Output, in ``DIR``:

- ``table.md``: rows = methods (in ``--algorithms`` order), one column group per setting, mean ± std
  over seeds, twice: **final** (test metrics after the last round) and **best** (test metrics at the
  round with the best *validation* score of the main metric; the test set never selects anything).
  Multi-label settings: macro-AUC, macro-F1, micro-AUC, micro-F1 in percent (FedNCAlign-ML Tables
  1-4). Single-label settings: GM, PM, Many, Med, Few as fractions (FedLoGe Tables 1-2). std is the
  sample standard deviation (ddof = 1) over seeds.
- ``table.csv``: the same numbers in long form, as fractions, with every seed's value.
- ``table_final.png``, ``table_best.png``: grouped bar charts with std error bars.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from fedapp.config import ALGORITHMS, ConfigError, RunConfig, available_presets, keys_read_by, load_preset
from fedapp.results import PROJECT_ROOT

NO_PRESET = "default"
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
METHOD_NAMES = {
    "centralized": "Centralized (upper bound)", "fedavg": "FedAvg", "fedprox": "FedProx", "fedcurv": "FedCurv",
    "scaffold": "SCAFFOLD", "spherefed": "SphereFed", "fedlgt": "FedLGT", "fedncalign-ml": "FedNCAlign-ML",
    "fedloge": "FedLoGe", "fedbn": "FedBN", "fedper": "FedPer", "fedrep": "FedRep", "ditto": "Ditto",
    "fedrod": "FedROD", "fedbabu": "FedBABU", "fedetf": "FedETF", "ratio-loss": "Ratio Loss",
}
GLOBAL_MODEL_METRICS = ("gm", "many", "medium", "few")  # single-label columns measured on the global model
SWEEP_MARKER = "sweep-run.json"  # written into a run directory when its run finished: {nodes, engine}
RESERVED = ("algorithm", "seed", "output-dir", "preset")  # set by the runner for each run


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its place in the table, its run config overrides and directory."""

    setting: str
    algorithm: str
    seed: int
    overrides: dict[str, Any]
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.setting} {self.algorithm} seed={self.seed}"


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


def plan_sweep(
    settings: Sequence[str], algorithms: Sequence[str], seeds: int, out: Path,
    extra: dict[str, Any] | None = None, rounds: int | None = None,
) -> list[RunSpec]:
    """Every (setting, seed, algorithm) run, validated; seed-major so an interrupted sweep is balanced."""
    extra = dict(extra or {})
    reserved = sorted(set(extra) & set(RESERVED))
    if reserved:
        raise ConfigError(f"-c must not set {reserved}: the table runner sets them per run "
                          "(use the positional settings, --algorithms and --seeds)")
    if rounds is not None:
        extra["num-server-rounds"] = rounds
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds} is not allowed; allowed: an integer >= 1")
    if not algorithms:
        raise ConfigError("--algorithms is empty; give a comma-separated list, e.g. fedavg,fedprox")
    if len(set(algorithms)) != len(algorithms) or len(set(settings)) != len(settings):
        raise ConfigError("--algorithms and the settings must not repeat a name")
    from fedapp.registry import get_algorithm

    for algorithm in algorithms:
        get_algorithm(algorithm)  # unknown or not yet implemented: clear error now, not mid-sweep
    specs = []
    for setting in settings:
        base = setting_overrides(setting)
        for seed in range(seeds):
            for algorithm in algorithms:
                run_dir = (out / "runs" / setting / algorithm / f"seed-{seed}").resolve()
                overrides = {**base, **extra, "algorithm": algorithm, "seed": seed, "output-dir": str(run_dir)}
                config = resolved_config(overrides)
                check_overrides_apply(config, extra)
                specs.append(RunSpec(setting, algorithm, seed, overrides, run_dir))
    return specs


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


def run_state(spec: RunSpec, nodes: int) -> str:
    """``done`` (finished with this config), ``partial`` (started, unfinished) or ``new``."""
    if not spec.run_dir.exists():
        return "new"
    summary, config_path = spec.run_dir / "summary.json", spec.run_dir / "config.yaml"
    if not summary.is_file():
        return "partial"
    expected = resolved_config(spec.overrides).to_kebab()
    found = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    defaults = RunConfig.default_values()
    # A key missing there was added to the project after that run: fine if this sweep keeps its default.
    # A key only other algorithms read (e.g. fedlgt-layers for a FedAvg run) never touched that run.
    compared = keys_read_by(expected["algorithm"]) - {"output-dir"}
    differing = sorted(k for k in expected if k in compared and found.get(k, defaults[k]) != expected[k])
    if differing:
        key = differing[0]
        raise ConfigError(
            f"{spec.run_dir} holds a finished run with another config ({key}: {found.get(key)!r} there, "
            f"{expected[key]!r} now); choose another --out"
        )
    marker = spec.run_dir / SWEEP_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("nodes") != nodes:
        raise ConfigError(f"{spec.run_dir} was run with nodes={json.loads(marker.read_text()).get('nodes')}, "
                          f"not {nodes}; choose another --out")
    return "done"


# ------------------------------------------------------------------------------------------- run
def execute(spec: RunSpec, nodes: int, engine: str) -> None:
    """Run one (setting, algorithm, seed) into its run directory; raises on failure."""
    if engine == "inprocess":
        from fedapp.inprocess import run_inprocess

        run_inprocess(spec.overrides, nodes)
    else:
        from fedapp.simulate import main as simulate_main, to_override_string

        code = simulate_main(["--nodes", str(nodes), "-c", to_override_string(spec.overrides)])
        if code != 0:
            raise RuntimeError(f"python -m fedapp.simulate exited with {code}; see {spec.run_dir}/simulation.log")
    if not (spec.run_dir / "summary.json").is_file():
        raise RuntimeError(f"the run wrote no summary.json in {spec.run_dir}")
    (spec.run_dir / SWEEP_MARKER).write_text(json.dumps({"nodes": nodes, "engine": engine}))


def run_sweep(specs: Sequence[RunSpec], nodes: int, engine: str, stream=None) -> list[tuple[RunSpec, str]]:
    """Run what is not done yet, one progress line per run; returns the failures (spec, reason)."""
    stream = stream or sys.stdout
    states = [run_state(spec, nodes) for spec in specs]
    todo = sum(state != "done" for state in states)
    print(f"[tables] {len(specs)} runs ({len(specs) - todo} done earlier, {todo} to run), engine={engine}, "
          f"nodes={nodes}", file=stream, flush=True)
    started = time.monotonic()
    durations: list[float] = []
    failures: list[tuple[RunSpec, str]] = []
    width = len(str(len(specs)))
    for index, (spec, state) in enumerate(zip(specs, states), start=1):
        prefix = f"[{index:>{width}}/{len(specs)}] {spec.label}:"
        if state == "done":
            print(f"{prefix} done earlier, skipped", file=stream, flush=True)
            continue
        if state == "partial":
            shutil.rmtree(spec.run_dir)  # an interrupted run of this sweep: start it again
        begin = time.monotonic()
        try:
            execute(spec, nodes, engine)
            outcome = summary_line(json.loads((spec.run_dir / "summary.json").read_text()))
        except Exception as error:  # noqa: BLE001 - one failed run must not stop the sweep
            failures.append((spec, f"{type(error).__name__}: {error}"))
            outcome = f"FAILED ({type(error).__name__}: {error})"
        durations.append(time.monotonic() - begin)
        todo -= 1
        eta = _duration(todo * float(np.mean(durations))) if todo else "0s"
        print(f"{prefix} {outcome} ({durations[-1]:.0f} s) | elapsed {_duration(time.monotonic() - started)}, "
              f"ETA {eta}", file=stream, flush=True)
    return failures


def summary_line(summary: dict[str, Any]) -> str:
    task = summary["task"]
    names = [key for key, _ in COLUMNS[task]][:2]
    final = " ".join(f"{n}={_num(summary['final'].get(n))}" for n in names)
    best = " ".join(f"{n}={_num(summary['best'].get(n))}" for n in names)
    return f"final {final}; best {best} (round {summary.get('best_round')})"


# --------------------------------------------------------------------------------------- tabulate
def collect(specs: Sequence[RunSpec]) -> dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]:
    """``(setting, algorithm) -> [(seed, summary)]`` for the finished runs."""
    table: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for spec in specs:
        path = spec.run_dir / "summary.json"
        if path.is_file():
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
    from fedapp.registry import get_algorithm

    return algorithm not in ALGORITHMS or get_algorithm(algorithm).strategy.has_global_model


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
             tasks: dict[str, str], seeds: int, header_lines: Sequence[str]) -> str:
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
            cells = [METHOD_NAMES.get(algorithm, algorithm)]
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
                   label=METHOD_NAMES.get(algorithm, algorithm))
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
                  out: Path, header_lines: Sequence[str]) -> dict[str, Path]:
    """table.md, table.csv and the bar charts in ``out``; returns their paths."""
    tasks, records = table_cells(specs, settings, algorithms)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "table.md", "csv": out / "table.csv"}
    paths["markdown"].write_text(markdown(records, settings, algorithms, tasks, seeds, header_lines))
    write_csv(records, paths["csv"])
    for selection in SELECTIONS:
        paths[f"chart_{selection}"] = bar_chart(records, settings, algorithms, tasks, selection,
                                                out / f"table_{selection}.png")
    return paths


def describe_settings(specs: Sequence[RunSpec], settings: Sequence[str], seeds: int, nodes: int,
                      engine: str, command: str) -> list[str]:
    """The table's header: command, budget, and what each setting resolves to (keys off their default)."""
    defaults = RunConfig.default_values()
    lines = [f"<!-- generated by: {command} -->",
             f"Seeds {', '.join(str(s) for s in range(seeds))}; {nodes} clients; engine {engine}. "
             "Cells: mean ± sample std (ddof=1) over seeds; (n=k) marks cells with fewer finished seeds."]
    for setting in settings:
        spec = next(s for s in specs if s.setting == setting)
        config = resolved_config(spec.overrides).to_kebab()
        changed = {k: v for k, v in config.items()
                   if k not in ("algorithm", "seed", "output-dir", "preset") and v != defaults[k]}
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    out = Path(args.out or PROJECT_ROOT / "outputs" / "tables" / "+".join(args.settings)).resolve()
    try:
        from flwr.common.config import parse_config_args

        extra = parse_config_args(args.run_config) if args.run_config else {}
        if args.nodes < 1:
            raise ConfigError(f"--nodes={args.nodes} is not allowed; allowed: an integer >= 1")
        specs = plan_sweep(args.settings, algorithms, args.seeds, out, extra, args.rounds)
        failures = [] if args.table_only else _run(specs, args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = "python -m fedapp.tables " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = describe_settings(specs, args.settings, args.seeds, args.nodes, args.engine, command)
    paths = write_outputs(specs, args.settings, algorithms, args.seeds, out, header)
    print(paths["markdown"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    for spec, reason in failures:
        print(f"failed: {spec.label}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _run(specs: Sequence[RunSpec], args: argparse.Namespace) -> list[tuple[RunSpec, str]]:
    if args.engine == "inprocess" and not args.verbose:
        from flwr.common.logger import FLOWER_LOGGER

        FLOWER_LOGGER.setLevel(logging.WARNING)  # the sweep's own lines are the progress
    return run_sweep(specs, args.nodes, args.engine)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else "n/a"


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


if __name__ == "__main__":
    sys.exit(main())
