"""Two clients sharing one CUDA GPU: a real deployment and a simulation, per-round times and GPU memory.

    python -m benchmarks.gpu_share [-c "num-server-rounds=3 backbone='resnet18'"] [--gpu 0]

Needs a machine with a CUDA GPU and nvidia-smi (exits with status 2 and says so otherwise).
Runs the same run config twice, one after the other:

1. ``deployment``: ``scripts/deploy_local.py --nodes 2 --device cuda:0,cuda:0`` (TLS, SuperNode
   authentication, separate SuperExecs): two SuperNodes whose ClientApp processes share GPU
   ``--gpu`` (``CUDA_VISIBLE_DEVICES``), each message in a fresh process;
2. ``simulation``: ``python -m fedapp.simulate --nodes 2 --gpus-per-client 0.5``: Ray puts both
   ClientApp actors on that GPU (half of it each).

While each runs, ``nvidia-smi`` is sampled every second: the GPU's used memory (peak) and the
per-process memory of the compute processes (peak of their sum and of the largest one). Per-round
times are ``round_seconds`` from each run's ``metrics.jsonl``. Prints one JSON line per run and
a final JSON object, written to ``--out`` (default docs/results/gpu-share.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import machine_info, write_report

ROOT = Path(__file__).resolve().parents[1]


def nvidia_smi(*query: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        return []
    return [[field.strip() for field in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]


class GpuSampler(threading.Thread):
    """Peak used memory of GPU ``index`` and of the compute processes on it (MiB)."""

    def __init__(self, index: int) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.stop_event = threading.Event()
        self.peak_used = 0.0
        self.peak_processes_total = 0.0
        self.peak_process = 0.0
        self.peak_utilization = 0.0

    def run(self) -> None:
        uuid_rows = nvidia_smi("--query-gpu=index,uuid")
        uuid = next((row[1] for row in uuid_rows if row[0] == str(self.index)), "")
        while not self.stop_event.wait(1.0):
            for row in nvidia_smi("--query-gpu=index,memory.used,utilization.gpu"):
                if row[0] == str(self.index):
                    self.peak_used = max(self.peak_used, float(row[1]))
                    self.peak_utilization = max(self.peak_utilization, float(row[2]))
            apps = [float(row[2]) for row in nvidia_smi("--query-compute-apps=gpu_uuid,pid,used_memory")
                    if row[0] == uuid and row[2].replace(".", "").isdigit()]
            if apps:
                self.peak_processes_total = max(self.peak_processes_total, sum(apps))
                self.peak_process = max(self.peak_process, max(apps))


def run_case(name: str, argv: list[str], run_dir: Path, gpu: int, env: dict[str, str]) -> dict:
    sampler = GpuSampler(gpu)
    sampler.start()
    started = time.monotonic()
    try:
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=6 * 3600)
    finally:
        sampler.stop_event.set()
        sampler.join(timeout=10)
    seconds = time.monotonic() - started
    (run_dir.parent / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}); see {run_dir.parent / f'{name}.log'}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = {
        "case": name, "wall_seconds": seconds,
        "round_seconds": [r["round_seconds"] for r in rows],
        "clients_ok": [r["clients_ok"] for r in rows],
        "gpu_memory_used_peak_mib": sampler.peak_used,
        "gpu_processes_total_peak_mib": sampler.peak_processes_total,
        "gpu_largest_process_peak_mib": sampler.peak_process,
        "gpu_utilization_peak_percent": sampler.peak_utilization,
        "final": json.loads((run_dir / "summary.json").read_text()).get("final", {}),
    }
    print(json.dumps(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--run-config", default="num-server-rounds=3 local-epochs=1",
                        help="run-config overrides for both runs (output-dir is set per run)")
    parser.add_argument("--gpu", type=int, default=0, help="host index of the GPU to share (default 0)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "gpu-share.json"))
    args = parser.parse_args(argv)
    if shutil.which("nvidia-smi") is None or not nvidia_smi("--query-gpu=index"):
        print("error: no CUDA GPU here (nvidia-smi missing or lists no GPU); run this on a GPU machine",
              file=sys.stderr)
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="gpu-share-"))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(args.gpu), PYTHONUNBUFFERED="1")
    cases = []
    deploy_dir = work / "deployment" / "run"
    cases.append(run_case("deployment", [
        sys.executable, "scripts/deploy_local.py", "--nodes", "2", "--device", "cuda:0,cuda:0",
        "--workdir", str(work / "deployment"), "-c", f'{args.run_config} output-dir="{deploy_dir}"'],
        deploy_dir, args.gpu, env))
    sim_dir = work / "simulation" / "run"
    cases.append(run_case("simulation", [
        sys.executable, "-m", "fedapp.simulate", "--nodes", "2", "--gpus-per-client", "0.5",
        "--flwr-home", str(work / "simulation" / "flwr"), "-c", f'{args.run_config} output-dir="{sim_dir}"'],
        sim_dir, args.gpu, env))
    gpu_name = nvidia_smi("--query-gpu=index,name,memory.total")
    report = {
        "benchmark": "gpu_share",
        "machine": machine_info(gpu=[row for row in gpu_name if row[0] == str(args.gpu)]),
        "config": {"run_config": args.run_config, "nodes": 2, "deployment_devices": "cuda:0,cuda:0",
                   "simulation_gpus_per_client": 0.5},
        "cases": cases,
        "workdir": str(work),
    }
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
