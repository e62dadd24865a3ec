"""FedAvg vs FedLoGe (and the Table 3 ablation rows) on lt-digits, with the round-time ratio.

    python -m benchmarks.fedloge [--imbalance-factors 10,50] [--seeds 3] [--rounds 30] [--nodes 10]
        [--alpha 0.5] [--runs fedavg,fedloge,fedloge-etf] [-c "key=value ..."] [--out DIR]

For every (imbalance factor, seed) the runs named by ``--runs`` execute back to back on the
in-process engine (:func:`fedapp.inprocess.run_inprocess`: Flower's server loop, the app's
strategies and clients), FedAvg first on even seeds and last on odd ones, so that a drift of the
machine's load does not favour one method. Runs:

- ``fedavg``: ``algorithm=fedavg``;
- ``fedloge``: ``algorithm=fedloge`` (its defaults: SSE-C, FedAvg of psi, GA-FR psi, LA-FR);
- ``fedloge-etf``: ``algorithm=fedloge fedloge-classifier=etf`` (the dense ETF row of Table 3);
- ``fedloge-ft5`` (not run by default): ``la-fr-finetune-epochs=5`` (Algorithm 1 line 12; 5 = the
  ``finetune-epochs`` of the FedBABU/FedETF baselines; training is identical to ``fedloge``);
- ``fedloge-psi-classwise`` (not run by default): ``head-aggregation=classwise`` (the authors'
  optional class-wise weights for psi).

GA-FR and LA-FR are evaluation-time realignments (Algorithm 1, stages 2-3): a FedLoGe run records
every head variant each round from the same trained model (``test_gm_psi_ga_fr``, ``test_gm_psi``,
``test_gm_fixed``; ``test_pm_la_fr``, ``test_pm_local_head``), so the GA-FR/LA-FR rows of Table 3
come from the ``fedloge`` and ``fedloge-etf`` runs without retraining. Numbers are the test metrics
after the last round (nothing is selected on the test set). Timing: ``mean_round_seconds`` of each
run (wall, fit + server evaluation + federated evaluation) and the CPU time of the whole run
divided by the rounds; the ratios FedLoGe / FedAvg are per (imbalance factor, seed) pair, then
averaged. Each run executes in a fresh Python process (``--isolate``, the default; as a real
``flwr run`` would): run back to back in one long-lived process, the later runs' round times
drift and the ratio is biased (measured: ``docs/results/README.md``, lt-digits). Every run
directory is kept under ``DIR/runs``; a finished run is not rerun (resumable).
Writes ``DIR/fedloge_benchmark.md`` and ``.json``; prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.progress import RunProgress
from fedapp.tables import mean_std

RUNS: dict[str, dict[str, Any]] = {
    "fedavg": {"algorithm": "fedavg"},
    "fedloge": {"algorithm": "fedloge"},
    "fedloge-etf": {"algorithm": "fedloge", "fedloge-classifier": "etf"},
    "fedloge-ft5": {"algorithm": "fedloge", "la-fr-finetune-epochs": 5},
    "fedloge-psi-classwise": {"algorithm": "fedloge", "head-aggregation": "classwise"},
}
# Table rows: (label, run, GM key, PM key), keys of the final test metrics in summary.json.
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("FedAvg", "fedavg", "gm", "pm"),
    ("ETF (dense), raw psi / raw phi_k", "fedloge-etf", "gm_psi", "pm_local_head"),
    ("ETF (dense) + GA-FR + LA-FR", "fedloge-etf", "gm_psi_ga_fr", "pm_la_fr"),
    ("SSE-C, raw psi / raw phi_k", "fedloge", "gm_psi", "pm_local_head"),
    ("SSE-C + GA-FR", "fedloge", "gm_psi_ga_fr", "pm_local_head"),
    ("SSE-C + LA-FR", "fedloge", "gm_psi", "pm_la_fr"),
    ("SSE-C + GA-FR + LA-FR (FedLoGe)", "fedloge", "gm_psi_ga_fr", "pm_la_fr"),
    ("FedLoGe, global head = SSE-C", "fedloge", "gm_fixed", "pm_la_fr"),
    ("FedLoGe, PM of the global model", "fedloge", "gm_psi_ga_fr", "pm_global"),
    ("FedLoGe + 5 epochs of LA-FR fine-tuning", "fedloge-ft5", "gm_psi_ga_fr", "pm"),
    ("FedLoGe, psi aggregated class-wise", "fedloge-psi-classwise", "gm_psi_ga_fr", "pm_la_fr"),
)
SHOTS = ("many", "medium", "few")
TIMING_FILE = "benchmark-timing.json"


def parse_overrides(text: str) -> dict[str, Any]:
    """``-c "k=v k2=v2"`` with Flower's value syntax (numbers, true/false, quoted strings)."""
    values: dict[str, Any] = {}
    for item in shlex.split(text):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"-c: {item!r} is not key=value")
        value: Any = raw
        if raw in ("true", "false"):
            value = raw == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        values[key] = value
    return values


# What a fresh process runs for one federation (``--isolate``): the in-process engine, nothing else.
CHILD = "import json, sys; from fedapp.inprocess import run_inprocess; run_inprocess(json.loads(sys.argv[1]), int(sys.argv[2]))"


def run_one(overrides: dict[str, Any], nodes: int, run_dir: Path, isolate: bool = True) -> dict[str, Any]:
    """Run (or read back) one federation, in a fresh process if ``isolate``; its summary plus timing."""
    timing_path = run_dir / TIMING_FILE
    if (run_dir / "summary.json").is_file() and timing_path.is_file():
        return {**json.loads((run_dir / "summary.json").read_text()), **json.loads(timing_path.read_text())}
    config = {**overrides, "output-dir": str(run_dir)}
    started_wall = time.perf_counter()
    if isolate:
        children_cpu = _children_cpu_seconds()
        subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(nodes)], check=True,
                       cwd=Path(__file__).resolve().parents[1])
        cpu = _children_cpu_seconds() - children_cpu
    else:
        from fedapp.inprocess import run_inprocess

        started_cpu = time.process_time()
        run_inprocess(config, nodes)
        cpu = time.process_time() - started_cpu
    timing = {
        "run_wall_seconds": time.perf_counter() - started_wall,
        "run_cpu_seconds": cpu,
        "isolated": isolate,
        "load_average_1m_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    timing_path.write_text(json.dumps(timing))
    return {**json.loads((run_dir / "summary.json").read_text()), **timing}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fedloge", description=__doc__.split("\n")[0])
    parser.add_argument("--imbalance-factors", default="10,50")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--runs", default="fedavg,fedloge,fedloge-etf", help=f"subset of {','.join(RUNS)}")
    parser.add_argument("-c", "--config", default="", help='extra run-config overrides for every run, "k=v ..."')
    parser.add_argument("--out", default="outputs/benchmarks/fedloge")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                        help="each run in a fresh Python process (default); --no-isolate: all in this one")
    args = parser.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown or not runs:
        parser.error(f"--runs {args.runs!r}: unknown {unknown}; allowed: {', '.join(RUNS)}")
    factors = [float(f) for f in args.imbalance_factors.split(",") if f]
    extra = parse_overrides(args.config)
    out = Path(args.out).resolve()

    records: list[dict[str, Any]] = []
    progress = RunProgress(len(factors) * args.seeds * len(runs), "fedloge-bench")
    for factor in factors:
        for seed in range(args.seeds):
            order = runs if seed % 2 == 0 else runs[::-1]
            for name in order:
                overrides = {"dataset": "lt-digits", "imbalance-factor": factor, "alpha": args.alpha,
                             "num-server-rounds": args.rounds, "seed": seed, **extra, **RUNS[name]}
                run_dir = out / "runs" / f"if{factor:g}" / name / f"seed-{seed}"
                begin = time.perf_counter()
                summary = run_one(overrides, args.nodes, run_dir, args.isolate)
                record = {
                    "imbalance_factor": factor, "seed": seed, "run": name, "overrides": overrides,
                    "run_dir": str(run_dir), "final": summary["final"], "best": summary["best"],
                    "best_round": summary["best_round"], "bytes_per_round": summary["bytes_per_round"],
                    "mean_round_seconds": summary["mean_round_seconds"],
                    "cpu_seconds_per_round": summary["run_cpu_seconds"] / args.rounds,
                    "run_wall_seconds": summary["run_wall_seconds"],
                }
                records.append(record)
                final = record["final"]
                progress.finished(f"IF={factor:g} seed={seed} {name}: GM={final['gm']:.4f} PM={final['pm']:.4f} "
                                  f"round={record['mean_round_seconds']:.2f}s "
                                  f"cpu/round={record['cpu_seconds_per_round']:.2f}s "
                                  f"({time.perf_counter() - begin:.0f} s)")
    progress.close()

    result = {"setting": {"dataset": "lt-digits", "imbalance_factors": factors, "alpha": args.alpha,
                          "nodes": args.nodes, "rounds": args.rounds, "seeds": list(range(args.seeds)),
                          "runs": {r: RUNS[r] for r in runs}, "extra_overrides": extra,
                          "metrics": "test metrics after the last round"},
              "table": tabulate(records, factors, runs), "timing": timing_ratios(records, factors, runs),
              "records": records}
    out.mkdir(parents=True, exist_ok=True)
    (out / "fedloge_benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "fedloge_benchmark.md").write_text(markdown(result))
    print(json.dumps(result))
    return 0


def tabulate(records: list[dict[str, Any]], factors: list[float], runs: list[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds of each table row's GM, PM (and many/medium/few for the main models)."""
    rows = []
    for label, run, gm_key, pm_key in ROWS:
        if run not in runs:
            continue
        for factor in factors:
            found = [r["final"] for r in records if r["run"] == run and r["imbalance_factor"] == factor]
            row: dict[str, Any] = {"row": label, "run": run, "imbalance_factor": factor, "gm_key": gm_key,
                                   "pm_key": pm_key, "seeds": len(found)}
            keys = {"gm": gm_key, "pm": pm_key}
            if gm_key == "gm" or label.endswith("(FedLoGe)"):
                keys.update({shot: shot for shot in SHOTS})
            for column, key in keys.items():
                values = [f[key] for f in found if f.get(key) is not None]
                row[column], row[f"{column}_std"] = mean_std(values)
                row[f"{column}_seeds"] = values
            rows.append(row)
    return rows


def timing_ratios(records: list[dict[str, Any]], factors: list[float], runs: list[str]) -> dict[str, Any]:
    """FedLoGe's round time over FedAvg's, per (imbalance factor, seed) pair and averaged."""
    if "fedavg" not in runs:
        return {}
    out: dict[str, Any] = {}
    for other in (r for r in runs if r != "fedavg"):
        pairs = []
        for factor in factors:
            for record in (r for r in records if r["run"] == other and r["imbalance_factor"] == factor):
                base = next(r for r in records if r["run"] == "fedavg" and r["imbalance_factor"] == factor
                            and r["seed"] == record["seed"])
                pairs.append({"imbalance_factor": factor, "seed": record["seed"],
                              "wall_ratio": record["mean_round_seconds"] / base["mean_round_seconds"],
                              "cpu_ratio": record["cpu_seconds_per_round"] / base["cpu_seconds_per_round"]})
        out[other] = {"pairs": pairs,
                      "mean_wall_ratio": float(np.mean([p["wall_ratio"] for p in pairs])),
                      "mean_cpu_ratio": float(np.mean([p["cpu_ratio"] for p in pairs]))}
    return out


def markdown(result: dict[str, Any]) -> str:
    setting = result["setting"]
    lines = [f"# FedAvg vs FedLoGe on lt-digits (alpha={setting['alpha']}, {setting['nodes']} clients, "
             f"{setting['rounds']} rounds, seeds {setting['seeds']}; test metrics after the last round, "
             "mean ± std over seeds)", ""]
    lines += ["| Row | IF | GM | PM | Many | Med | Few | GM from | PM from |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["table"]:
        cells = []
        for column in ("gm", "pm", "many", "medium", "few"):
            cells.append(f"{row[column]:.4f} ± {row[column + '_std']:.4f}" if column in row else "")
        lines.append(f"| {row['row']} | {row['imbalance_factor']:g} | " + " | ".join(cells)
                     + f" | {row['gm_key']} | {row['pm_key']} |")
    lines += ["", "| Run | wall ratio to FedAvg (mean over pairs) | CPU ratio to FedAvg |", "|---|---|---|"]
    for run, timing in result["timing"].items():
        lines.append(f"| {run} | {timing['mean_wall_ratio']:.3f} | {timing['mean_cpu_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
