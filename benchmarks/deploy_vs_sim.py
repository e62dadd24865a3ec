"""Round time of a loopback deployment next to a simulation of the same run, for one checkout.

    python -m benchmarks.deploy_vs_sim [--checkout /path/to/other/checkout] [--rounds 3]

Runs, one after the other, with the checkout's own code (``--checkout``, default this one, so an
older commit in another worktree gives the "before" figures on the same machine):

1. ``scripts/deploy_local.py --nodes 2`` (that checkout's deployment: TLS + SuperNode auth), and
2. ``python -m fedapp.simulate --nodes 2`` (Flower's Ray simulation),

both FedAvg on ml-digits, ``--rounds`` rounds of 1 local epoch, seed 0. Per-round times are
``round_seconds`` of each run's ``metrics.jsonl``. Round 1 of the simulation includes starting
its Ray actors, so ``steady`` averages rounds 2.. of both. Every deployment round starts fresh
ClientApp processes (one per message). The last line printed is one JSON object (also written to
``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load_average, machine_info, write_report

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, argv: list[str], checkout: Path, run_dir: Path) -> dict:
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(checkout), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=4 * 3600)
    seconds = time.monotonic() - started
    (run_dir.parent / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [r["round_seconds"] for r in rows]
    return {"wall_seconds": seconds, "round_seconds": rounds,
            "steady_round_seconds": statistics.mean(rounds[1:]) if len(rounds) > 1 else rounds[0],
            "final": {summary["main_metric"]: summary["final"][summary["main_metric"]]}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default=str(ROOT))
    parser.add_argument("--label", default="")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    checkout = Path(args.checkout).resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                            text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="deploy-vs-sim-"))
    values = f"num-server-rounds={args.rounds} local-epochs=1 seed=0"
    load_before = load_average()
    deploy_dir = work / "deployment" / "run"
    (work / "deployment").mkdir(parents=True)
    deployment = run("deployment", [sys.executable, "scripts/deploy_local.py", "--nodes", "2",
                                    "--workdir", str(work / "deployment"),
                                    "-c", f'{values} output-dir="{deploy_dir}"'], checkout, deploy_dir)
    sim_dir = work / "simulation" / "run"
    (work / "simulation").mkdir(parents=True)
    simulation = run("simulation", [sys.executable, "-m", "fedapp.simulate", "--nodes", "2",
                                    "--flwr-home", str(work / "simulation" / "flwr"),
                                    "-c", f'{values} output-dir="{sim_dir}"'], checkout, sim_dir)
    report = {
        "benchmark": "deploy_vs_sim",
        "label": args.label or commit,
        "checkout": str(checkout), "commit": commit,
        "machine": machine_info(loadavg_before=load_before, loadavg_after=load_average()),
        "config": {"algorithm": "fedavg", "dataset": "ml-digits", "nodes": 2, "rounds": args.rounds,
                   "local_epochs": 1, "seed": 0},
        "deployment": deployment,
        "simulation": simulation,
        "steady_round_ratio_deployment_vs_simulation":
            deployment["steady_round_seconds"] / simulation["steady_round_seconds"],
        "workdir": str(work),
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"deploy-vs-sim-{args.label or commit}.json")
    write_report(report, out)
    return report


if __name__ == "__main__":
    main()
