"""Scale benchmark: round time, peak memory and federation overhead for 10, 100 and 1,000 clients.

    python -m benchmarks.scale [--clients 10 100 1000] [--datasets ml-digits lt-digits] [--rounds 3]

Each case is a real Flower simulation (``python -m fedapp.simulate``: ``flwr run`` on Ray, one
ClientApp actor per CPU, FedAvg, small CNN, 1 local epoch), with ``fraction-fit`` 1.0 for 10
clients and 0.1 for more. While it runs, the resident memory of the whole process tree (the
simulate process, the SuperLink, the ServerApp/simulation processes, Ray's GCS, raylet and worker
actors) is sampled from ``/proc`` every ``--sample-seconds``: ``peak_rss_mb`` sums each process's
RSS (shared pages counted once per process: an upper bound), ``peak_pss_mb`` sums the proportional
set sizes (shared pages split between the processes sharing them: the best estimate of the RAM the
run takes). ``rss_by_round_mb`` is the tree's RSS when each round's line appears, to show that
memory does not grow with rounds.

Federation overhead: after the run, the clients that trained in each round (``partitions_ok`` in
``metrics.jsonl``) are rebuilt in this process and their ``fit`` is timed one after another (the
same code, data, seeds and ``torch`` threads as in the actors, no Flower transport): that is the
round's pure local-training compute. ``overhead_ratio`` = the round's fit-phase wall time in the
simulation (``fit_seconds``: sampling -> all replies -> aggregation) / that compute. With 2 actors
on 2 cores a perfectly parallel, overhead-free round would give 0.5. Round 1 includes starting the
Ray actors (imports of torch/flwr in each), so the ``steady_*`` figures average rounds 2.. only.

Data: ``min-partition-size`` is 1 for 100 and 1,000 clients (the default 10 makes 1,000 partitions of
~1,940 ml-digits samples impossible, and says so). 1,000 clients use ``partition="iid"`` (no
Dirichlet draw gives all 1,000 clients a sample of multi-label ml-digits). lt-digits' long-tailed
training set has 506 samples after the validation hold-out, fewer than 1,000 clients: the 1,000-client
lt-digits case uses ``imbalance-factor=1`` (1,251 samples, not long-tailed) and says so in ``notes``.
The last line printed is one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import machine_info, write_report
from benchmarks.progress import RunProgress
from fedapp.results import PROJECT_ROOT
from fedapp.simulate import to_override_string

MB = 1024 * 1024


# ------------------------------------------------------------------------ process-tree memory
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the "(comm)" that may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a snapshot of ``/proc``)."""
    children = _children_map()
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def _kib_field(path: str, name: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> dict[str, Any]:
    """Summed RSS and PSS (bytes) of the process tree under ``root``, and its process names."""
    pids = process_tree(root)
    per_process = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = " ".join(a.decode(errors="replace").rsplit("/", 1)[-1] for a in argv[:2] if a)[:48]
        per_process.append((name, _kib_field(f"/proc/{pid}/status", "VmRSS:") * 1024))
    rss = sum(r for _, r in per_process)
    pss = sum(_kib_field(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids) * 1024
    top = sorted(per_process, key=lambda item: -item[1])[:6]
    return {"rss": rss, "pss": pss, "processes": len(pids), "names": [n for n, _ in per_process],
            "top": [[n, round(r / MB, 1)] for n, r in top]}


# ------------------------------------------------------------------------------------ cases
def case_settings(dataset: str, clients: int, rounds: int) -> tuple[dict[str, Any], list[str]]:
    overrides: dict[str, Any] = {
        "algorithm": "fedavg", "dataset": dataset, "backbone": "cnn", "num-server-rounds": rounds,
        "local-epochs": 1, "seed": 0, "fraction-fit": 1.0 if clients <= 10 else 0.1,
    }
    notes = []
    if clients > 10:
        overrides["min-partition-size"] = 1
        if dataset == "lt-digits":
            overrides["fraction-evaluate"] = 0.1
            notes.append("PM from a 10% sample of clients per round (fraction-evaluate=0.1)")
    if clients >= 1000:
        overrides["partition"] = "iid"
        notes.append("partition=iid (no Dirichlet draw gives 1,000 clients a sample each)")
        if dataset == "lt-digits":
            overrides["imbalance-factor"] = 1.0
            notes.append("imbalance-factor=1: the long-tailed set has only 506 training samples (< 1,000 clients)")
    return overrides, notes


def run_case(dataset: str, clients: int, rounds: int, work: Path, sample_seconds: float,
             timeout: float) -> dict[str, Any]:
    overrides, notes = case_settings(dataset, clients, rounds)
    run_dir = work / f"{dataset}-{clients}"
    overrides["output-dir"] = str(run_dir)
    command = [sys.executable, "-m", "fedapp.simulate", "--nodes", str(clients),
               "--flwr-home", str(work / f"flwr-{dataset}-{clients}"), "-c", to_override_string(overrides)]
    print(f"[scale] {dataset}, {clients} clients, {rounds} rounds: {' '.join(command[1:4])} ...", flush=True)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    round_marks: list[float] = []
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("[round "):
                round_marks.append(time.monotonic())
                print(f"[scale]   {line.rstrip()}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = {"rss": 0, "pss": 0, "processes": 0}
    names: set[str] = set()
    rss_by_round: list[float] = []
    top_by_round: list[list] = []  # the largest processes (name, RSS MB) when each round's line appears
    while process.poll() is None:
        if time.monotonic() - started > timeout:
            process.kill()
            raise RuntimeError(f"{dataset}/{clients}: simulate exceeded {timeout:.0f} s")
        snapshot = tree_memory(process.pid)
        for key in peak:
            peak[key] = max(peak[key], snapshot[key])
        names.update(snapshot["names"])
        while len(rss_by_round) < len(round_marks):
            rss_by_round.append(round(snapshot["rss"] / MB, 1))
            top_by_round.append(snapshot["top"])
        time.sleep(sample_seconds)
    reader.join(timeout=10)
    wall = time.monotonic() - started
    if process.returncode != 0:
        tail = "".join(output[-30:])
        raise RuntimeError(f"{dataset}/{clients}: simulate exited with {process.returncode}:\n{tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    compute = [pure_fit_seconds(overrides, clients, row) for row in rows]
    fit_seconds = [float(r["fit_seconds"]) for r in rows]
    ratios = [f / c["fit"] if c["fit"] > 0 else float("nan") for f, c in zip(fit_seconds, compute)]
    steady = slice(1, None) if len(rows) > 1 else slice(0, None)
    main = summary["main_metric"]
    return {
        "dataset": dataset, "clients": clients, "rounds": len(rows),
        "fraction_fit": overrides["fraction-fit"], "clients_per_round": [r["clients_ok"] for r in rows],
        "overrides": {k: v for k, v in overrides.items() if k != "output-dir"}, "notes": notes,
        "round_seconds": [round(float(r["round_seconds"]), 2) for r in rows],
        "fit_seconds": [round(f, 2) for f in fit_seconds],
        "pure_fit_seconds": [round(c["fit"], 3) for c in compute],
        "client_build_seconds": [round(c["build"], 3) for c in compute],
        "overhead_ratio": [round(r, 2) for r in ratios],
        "steady_round_seconds": round(_mean([float(r["round_seconds"]) for r in rows][steady]), 2),
        "steady_overhead_ratio": round(_mean(ratios[steady]), 2),
        "peak_rss_mb": round(peak["rss"] / MB, 1), "peak_pss_mb": round(peak["pss"] / MB, 1),
        "peak_processes": peak["processes"], "rss_by_round_mb": rss_by_round, "rss_top_by_round_mb": top_by_round,
        "ray_workers_seen": sum(1 for n in names if "ray::" in n or "default_worker" in n),
        "wall_seconds": round(wall, 1), f"final_{main}": summary["final"].get(main),
        # Other jobs on the machine slow every figure down: the 1-minute load average, 2 cores.
        "load_average_start_end": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "bytes_per_round": summary["bytes_per_round"], "run_dir": str(run_dir),
    }


def pure_fit_seconds(overrides: dict[str, Any], clients: int, row: dict[str, Any]) -> dict[str, float]:
    """Seconds of ``fit`` (and of building the client) for the partitions that trained in ``row``'s round."""
    from flwr.app import Context, RecordDict
    from flwr.common import FitIns, GetParametersIns

    from fedapp.client_app import client_fn
    from fedapp.config import RunConfig

    run_config = {**RunConfig.default_values(), **overrides}
    parameters = None
    fit = build = 0.0
    for partition_id in row.get("partitions_ok", []):
        context = Context(run_id=0, node_id=partition_id + 1, state=RecordDict(), run_config=run_config,
                          node_config={"partition-id": partition_id, "num-partitions": clients})
        if parameters is None:  # the first build also loads and splits the data: not timed
            first = client_fn(context)
            parameters = first.get_parameters(GetParametersIns(config={})).parameters
        start = time.perf_counter()
        client = client_fn(context)
        middle = time.perf_counter()
        client.fit(FitIns(parameters, {"server-round": int(row["round"])}))
        end = time.perf_counter()
        build += middle - start
        fit += end - middle
    return {"fit": fit, "build": build}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_table(cases: list[dict[str, Any]]) -> None:
    header = ("dataset", "clients", "per round", "round s (r1 | steady)", "fit s steady", "pure fit s",
              "overhead", "peak RSS MB", "peak PSS MB", "procs")
    print("[scale] " + " | ".join(header))
    for c in cases:
        steady_fit = _mean(c["fit_seconds"][1:] or c["fit_seconds"])
        pure = _mean(c["pure_fit_seconds"][1:] or c["pure_fit_seconds"])
        print("[scale] " + " | ".join(str(x) for x in (
            c["dataset"], c["clients"], c["clients_per_round"][-1],
            f"{c['round_seconds'][0]} | {c['steady_round_seconds']}", f"{steady_fit:.2f}", f"{pure:.3f}",
            c["steady_overhead_ratio"], c["peak_rss_mb"], c["peak_pss_mb"], c["peak_processes"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--datasets", nargs="+", default=["ml-digits", "lt-digits"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-seconds", type=float, default=1.0, help="memory sampling period")
    parser.add_argument("--timeout", type=float, default=3600, help="per case, seconds")
    parser.add_argument("--work-dir", default="", help="where run directories go (default: a temp dir)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results" / "scale.json"))
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedapp-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    with RunProgress(len(args.datasets) * len(args.clients), "scale-bench") as progress:
        for dataset in args.datasets:
            for clients in args.clients:
                case = run_case(dataset, clients, args.rounds, work, args.sample_seconds, args.timeout)
                cases.append(case)
                progress.finished(f"{dataset}, {clients} clients: {case['rounds']} rounds, "
                                  f"{_mean(case['round_seconds']):.2f} s/round")
    print_table(cases)
    result = {
        "benchmark": "scale", "engine": "flower simulation (Ray), 1 CPU per ClientApp actor",
        "machine": machine_info(mem_total_gb=round(_kib_field("/proc/meminfo", "MemTotal:") / MB, 1)),
        "seed": 0, "cases": cases,
    }
    write_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
