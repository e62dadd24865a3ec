"""FedNCAlign-ML vs FedAvg and the paper's ablation rows (Tables 7 and 8) on ml-digits, 10 clients.

    python -m benchmarks.fedncalign [--settings ml-digits-skewed,ml-digits-alpha0.1] [--rows all]
        [--ablation-settings ml-digits-skewed] [--seeds 3] [--rounds 30] [--nodes 10]
        [--timing-pairs 3] [--timing-rounds 3] [-c "key=value ..."] [--out DIR] [--table-only]

Every (setting, row, seed) is one in-process federation (Flower's server loop, the app's strategy
and clients; :mod:`fedapp.inprocess`) in ``DIR/runs/<setting>/<row>/seed-<s>``; a rerun with the
same ``--out`` skips finished runs (as :mod:`fedapp.tables`, whose sweep machinery this reuses). A
row is a run-config override of the default run, so every number can be reproduced with
``python -m fedapp.simulate -c "..."``. Rows (``--rows`` picks some, in this order):

    fedavg           FedAvg: pooled feature, learnable linear head, BCE       (Table 7 row 1)
    fedncalign-ml    the method: ETF classifier + LADM (fixed ETF queries) + L_rej + L_con (Table 7 last)
    etf-ladm         ETF + LADM, BCE only                          (Table 7 row 2 = Table 8 fixed/ETF)
    etf-ladm-rej     ETF + LADM + rejection loss                                 (Table 7, one loss)
    etf-ladm-con     ETF + LADM + contrastive loss                               (Table 7, one loss)
    fc-ladm          learnable (group-wise) FC classifier on LADM features, BCE (component ablation)
    etf-pooled       ETF classifier on the pooled feature (no LADM), BCE        (component ablation)
    queries-random   learnable LADM queries, random init, BCE                   (Table 8 row 1)
    queries-etf      learnable LADM queries, ETF init, BCE                      (Table 8 row 2)

The ablation rows (all but fedavg and fedncalign-ml) run on ``--ablation-settings`` only (default:
the first setting), to fit a small machine; the other settings compare FedAvg and FedNCAlign-ML.

Reported per setting and row: macro/micro AUC and F1, mean ± sample std over seeds, for the
**final** round and for the **best** round (selected on the validation split's macro-AUC; the test
split never selects anything), plus bytes per round.

Round time: FedNCAlign-ML's mean round time over FedAvg's, on the same backbone, measured twice:
(1) over the paired long runs (same setting and seed); (2) in a timing phase of ``--timing-pairs``
alternating short runs (FedAvg, FedNCAlign-ML, FedAvg, ...; ``--timing-rounds`` rounds each, the
first setting, seed 0, after one uncounted 1-round warm-up run of each), so both see the same
machine load. Wall time (``round_seconds``, what
``summary.json`` reports) and this process's CPU time per round are both given: on a shared machine
the CPU time is the steadier of the two.

The last line printed is one JSON object: machine, config, figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks import load_average, machine_info
from benchmarks.progress import RunProgress
from fedapp.config import ConfigError
from fedapp.results import PROJECT_ROOT
from fedapp.tables import (
    SELECTIONS,
    RunSpec,
    collect,
    describe_settings,
    execute,
    markdown,
    mean_std,
    resolved_config,
    run_state,
    setting_overrides,
    table_cells,
    write_csv,
)

NO_LOSSES = {"lambda-rejection": 0.0, "lambda-contrastive": 0.0}
FNC = {"algorithm": "fedncalign-ml"}
# row name -> (run-config overrides, description); the order is the table's row order.
ROWS: dict[str, tuple[dict[str, Any], str]] = {
    "fedavg": ({"algorithm": "fedavg"}, "FedAvg: pooled feature + FC head (Table 7 row 1)"),
    "fedncalign-ml": ({**FNC}, "FedNCAlign-ML: ETF + LADM + L_rej + L_con (Table 7 last row)"),
    "etf-ladm": ({**FNC, **NO_LOSSES}, "ETF + LADM, BCE only (Table 7 row 2; Table 8 fixed ETF queries)"),
    "etf-ladm-rej": ({**FNC, "lambda-contrastive": 0.0}, "ETF + LADM + L_rej"),
    "etf-ladm-con": ({**FNC, "lambda-rejection": 0.0}, "ETF + LADM + L_con"),
    "fc-ladm": ({**FNC, **NO_LOSSES, "classifier": "fc"}, "FC (group-wise) head on LADM features, BCE"),
    "etf-pooled": ({**FNC, **NO_LOSSES, "use-ladm": False}, "ETF head on the pooled feature (no LADM), BCE"),
    "queries-random": ({**FNC, **NO_LOSSES, "ladm-queries": "random-learnable"},
                       "ETF + LADM, learnable queries, random init, BCE (Table 8 row 1)"),
    "queries-etf": ({**FNC, **NO_LOSSES, "ladm-queries": "etf-learnable"},
                    "ETF + LADM, learnable queries, ETF init, BCE (Table 8 row 2)"),
}
DEFAULT_SETTINGS = ("ml-digits-skewed", "ml-digits-alpha0.1")
TIMING_FILE = "benchmark-timing.json"  # per run: this process's CPU seconds and wall seconds
METRICS = ("macro_auc", "macro_f1", "micro_auc", "micro_f1")


# ------------------------------------------------------------------------------------------ plan
MAIN_ROWS = ("fedavg", "fedncalign-ml")


def plan(settings: Sequence[str], rows: Sequence[str], seeds: int, rounds: int, out: Path,
         extra: dict[str, Any], ablation_settings: Sequence[str] | None = None) -> list[RunSpec]:
    """Every (setting, seed, row) run, validated now; seed-major so a cut-short sweep stays balanced.

    Rows other than :data:`MAIN_ROWS` are planned only for ``ablation_settings`` (default: all).
    """
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise ConfigError(f"--rows {unknown} unknown; allowed: {', '.join(ROWS)}")
    reserved = sorted(set(extra) & {"algorithm", "seed", "output-dir", "preset"})
    if reserved:
        raise ConfigError(f"-c must not set {reserved}: rows and settings set them")
    specs = []
    for setting in settings:
        base = setting_overrides(setting)
        for seed in range(seeds):
            for row in rows:
                if ablation_settings is not None and row not in MAIN_ROWS and setting not in ablation_settings:
                    continue
                run_dir = (out / "runs" / setting / row / f"seed-{seed}").resolve()
                overrides = {**base, **extra, "num-server-rounds": rounds, **ROWS[row][0], "seed": seed,
                             "output-dir": str(run_dir)}
                resolved_config(overrides)  # a bad combination fails before anything runs
                specs.append(RunSpec(setting, row, seed, overrides, run_dir))
    return specs


# ------------------------------------------------------------------------------------------- run
def timed_execute(spec: RunSpec, nodes: int) -> dict[str, float]:
    """Run one spec in this process; record its CPU and wall seconds next to its results."""
    cpu, wall = time.process_time(), time.perf_counter()
    execute(spec, nodes, "inprocess")
    timing = {"cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}
    (spec.run_dir / TIMING_FILE).write_text(json.dumps(timing))
    return timing


def run_all(specs: Sequence[RunSpec], nodes: int) -> list[tuple[RunSpec, str]]:
    """Run what is not finished; one progress line per run (stderr); returns the failures."""
    failures = []
    progress = RunProgress(len(specs), "fedncalign-bench")
    for spec in specs:
        prefix = f"{spec.label}:"
        state = run_state(spec, nodes)
        if state == "done":
            progress.finished(f"{prefix} done earlier", executed=False)
            continue
        if state == "partial":
            shutil.rmtree(spec.run_dir)
        try:
            timing = timed_execute(spec, nodes)
            summary = json.loads((spec.run_dir / "summary.json").read_text())
            outcome = (f"final auc={summary['final']['macro_auc']:.4f} f1={summary['final']['macro_f1']:.4f}; "
                       f"best auc={summary['best']['macro_auc']:.4f} f1={summary['best']['macro_f1']:.4f} "
                       f"(round {summary['best_round']}); {summary['mean_round_seconds']:.1f} s/round, "
                       f"cpu {timing['cpu_seconds']:.0f} s")
        except Exception as error:  # noqa: BLE001 - one failed run must not stop the sweep
            failures.append((spec, f"{type(error).__name__}: {error}"))
            outcome = f"FAILED ({type(error).__name__}: {error})"
        progress.finished(f"{prefix} {outcome}")
    progress.close()
    return failures


def timing_phase(setting: str, pairs: int, rounds: int, nodes: int, out: Path,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """Alternate short FedAvg / FedNCAlign-ML runs (seed 0) and compare their per-round costs."""
    per_round: dict[str, dict[str, list[float]]] = {row: {"wall": [], "cpu": []} for row in ("fedavg", "fedncalign-ml")}

    def one_run(row: str, name: str, num_rounds: int) -> tuple[dict[str, float], dict[str, Any]]:
        run_dir = (out / "timing" / name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        spec = RunSpec(setting, row, 0, {**setting_overrides(setting), **extra, **ROWS[row][0], "seed": 0,
                                         "num-server-rounds": num_rounds, "checkpoint-every": 0,
                                         "output-dir": str(run_dir)}, run_dir)
        timing = timed_execute(spec, nodes)
        return timing, json.loads((run_dir / "summary.json").read_text())

    for row in per_round:  # warm-up (not counted): data caches, lazy initialisation, allocator
        one_run(row, f"{row}-warmup", 1)
    for pair in range(pairs):
        for row in per_round:
            timing, summary = one_run(row, f"{row}-{pair}", rounds)
            per_round[row]["wall"].append(float(summary["mean_round_seconds"]))
            per_round[row]["cpu"].append(timing["cpu_seconds"] / rounds)
            print(f"[timing {pair + 1}/{pairs}] {row}: {summary['mean_round_seconds']:.2f} s/round wall, "
                  f"{timing['cpu_seconds'] / rounds:.2f} s/round cpu", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"setting": setting, "pairs": pairs, "rounds_per_run": rounds, "seed": 0}
    for kind in ("wall", "cpu"):
        ours, base = per_round["fedncalign-ml"][kind], per_round["fedavg"][kind]
        result[f"{kind}_seconds_per_round"] = {"fedavg": base, "fedncalign-ml": ours}
        result[f"{kind}_ratio"] = float(np.sum(ours) / np.sum(base))
        result[f"{kind}_ratio_per_pair"] = [o / b for o, b in zip(ours, base)]
    return result


# --------------------------------------------------------------------------------------- figures
def figures(specs: Sequence[RunSpec], settings: Sequence[str], rows: Sequence[str]) -> dict[str, Any]:
    """Per setting and row: metrics (mean, std, values) per selection, bytes and seconds per round."""
    runs = collect(specs)
    result: dict[str, Any] = {}
    for setting in settings:
        result[setting] = {}
        for row in rows:
            pairs = sorted(runs.get((setting, row), []), key=lambda pair: pair[0])
            if not pairs:
                continue
            entry: dict[str, Any] = {"seeds": [seed for seed, _ in pairs],
                                     "overrides": ROWS[row][0], "description": ROWS[row][1]}
            for selection in SELECTIONS:
                entry[selection] = {}
                for metric in METRICS:
                    values = [float(s[selection][metric]) for _, s in pairs]
                    mean, std = mean_std(values)
                    entry[selection][metric] = {"mean": mean, "std": None if math.isnan(std) else std,
                                                "values": values}
            entry["best_rounds"] = [s.get("best_round") for _, s in pairs]
            entry["bytes_per_round"] = float(np.mean([s["bytes_per_round"] for _, s in pairs]))
            entry["mean_round_seconds"] = float(np.mean([s["mean_round_seconds"] for _, s in pairs]))
            result[setting][row] = entry
    return result


def paired_round_time(specs: Sequence[RunSpec]) -> dict[str, Any]:
    """FedNCAlign-ML / FedAvg per-round wall and CPU time over the long runs of the same (setting, seed)."""
    by_key: dict[tuple[str, int, str], RunSpec] = {(s.setting, s.seed, s.algorithm): s for s in specs}
    wall, cpu = [], []
    for (setting, seed, row), spec in by_key.items():
        base = by_key.get((setting, seed, "fedavg"))
        if row != "fedncalign-ml" or base is None:
            continue
        try:
            ours = json.loads((spec.run_dir / "summary.json").read_text())
            theirs = json.loads((base.run_dir / "summary.json").read_text())
        except FileNotFoundError:
            continue
        wall.append(ours["mean_round_seconds"] / theirs["mean_round_seconds"])
        timing_ours, timing_theirs = spec.run_dir / TIMING_FILE, base.run_dir / TIMING_FILE
        if timing_ours.is_file() and timing_theirs.is_file():
            cpu.append(json.loads(timing_ours.read_text())["cpu_seconds"]
                       / json.loads(timing_theirs.read_text())["cpu_seconds"])
    return {"pairs": len(wall), "wall_ratio_mean": float(np.mean(wall)) if wall else None, "wall_ratios": wall,
            "cpu_ratio_mean": float(np.mean(cpu)) if cpu else None, "cpu_ratios": cpu}


def machine() -> dict[str, Any]:
    import torch

    return machine_info(torch=torch.__version__, torch_threads_per_client=1, device="cpu",
                        load_average_at_end=load_average())


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fedncalign", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help="comma-separated preset names")
    parser.add_argument("--rows", default="all", help=f"comma-separated rows or 'all': {', '.join(ROWS)}")
    parser.add_argument("--ablation-settings", default=None,
                        help="comma-separated settings that also run the ablation rows (default: the first)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--rounds", type=int, default=30, help="num-server-rounds of every long run (default 30)")
    parser.add_argument("--nodes", type=int, default=10, help="clients (default 10)")
    parser.add_argument("--timing-pairs", type=int, default=3, help="alternating FedAvg/FedNCAlign-ML timing runs")
    parser.add_argument("--timing-rounds", type=int, default=3, help="rounds of each timing run")
    parser.add_argument("-c", "--run-config", action="append", default=[], help="overrides for every run")
    parser.add_argument("--out", default="", help="output directory (default outputs/benchmarks/fedncalign)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; tabulate what is there")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    rows = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(",") if r.strip()]
    out = Path(args.out or PROJECT_ROOT / "outputs" / "benchmarks" / "fedncalign").resolve()
    from flwr.common.config import parse_config_args
    from flwr.common.logger import FLOWER_LOGGER

    FLOWER_LOGGER.setLevel(logging.WARNING)  # one progress line per run instead
    extra = parse_config_args(args.run_config) if args.run_config else {}
    try:
        ablation = ([s.strip() for s in args.ablation_settings.split(",") if s.strip()]
                    if args.ablation_settings is not None else settings[:1])
        specs = plan(settings, rows, args.seeds, args.rounds, out, extra, ablation)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failures = [] if args.table_only else run_all(specs, args.nodes)
    timing_path = out / "timing.json"
    if not args.table_only and args.timing_pairs > 0:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        timing_path.write_text(json.dumps(
            timing_phase(settings[0], args.timing_pairs, args.timing_rounds, args.nodes, out, extra), indent=2))
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else None

    command = "python -m benchmarks.fedncalign " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = describe_settings(specs, settings, args.seeds, args.nodes, "inprocess", command)
    header += [f"- **{row}**: {ROWS[row][1]}; overrides {ROWS[row][0]}" for row in rows]
    tasks, records = table_cells(specs, settings, rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(records, settings, rows, tasks, args.seeds, header))
    write_csv(records, out / "table.csv")
    print((out / "table.md").read_text(), file=sys.stderr)
    for spec, reason in failures:
        print(f"failed: {spec.label}: {reason}", file=sys.stderr)
    report = {
        "benchmark": "fedncalign",
        "machine": machine(),
        "config": {"command": command, "settings": {s: resolved_config(setting_overrides(s)).to_kebab()
                                                    for s in settings},
                   "rows": {r: ROWS[r][0] for r in rows}, "ablation_settings": ablation,
                   "seeds": list(range(args.seeds)),
                   "rounds": args.rounds, "nodes": args.nodes, "extra": extra, "engine": "inprocess",
                   "out": str(out)},
        "figures": {"results": figures(specs, settings, rows),
                    "round_time_ratio_paired_runs": paired_round_time(specs),
                    "round_time_ratio_timing_phase": timing,
                    "failures": [f"{spec.label}: {reason}" for spec, reason in failures]},
    }
    print(json.dumps(report))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
