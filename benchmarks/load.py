"""Load: a real deployment of many SuperNodes on loopback; SuperLink memory and round time.

    python -m benchmarks.load [--nodes 20] [--rounds 2] [--fraction-fit 0.25]

The deployment of ``scripts/deploy_local.py`` (``fedapp.deploy.LocalDeployment``): TLS,
SuperNode authentication (every key registered), ``--isolation process`` with one SuperExec per
SuperLink/SuperNode, FedAvg with the small CNN on ml-digits (``num-partitions`` = ``--nodes``),
1 local epoch, ``min-available-clients`` = ``--nodes`` so every round starts with all of them
connected. ``--fraction-fit`` samples that share of the nodes per round: every message starts a
ClientApp process of its own (torch, the data), so on a small machine all nodes training at once
would exhaust its memory; the SuperLink still serves every SuperNode's heartbeats and pulls.

While the run goes on, the resident memory (``VmRSS``) of the SuperLink process, of the
server's SuperExec tree (SuperExec + ServerApp), and of all processes of the deployment together
is sampled from ``/proc`` every ``--sample-seconds``. Round times come from ``metrics.jsonl``
(``round_seconds``: sampling -> aggregation -> evaluation). The last line printed is one JSON
object (also written to ``--out``); the run must be ``finished:completed`` with every round in
``metrics.jsonl`` or the benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import load_average, machine_info, write_report
from fedapp.deploy import LocalDeployment, descendants, make_certs

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    return rss_mb(pid) + sum(rss_mb(child) for child, _ in descendants(pid))


class Sampler(threading.Thread):
    """Peak and last RSS of the SuperLink, the server's SuperExec tree and the whole deployment."""

    def __init__(self, deployment: LocalDeployment, every: float) -> None:
        super().__init__(daemon=True)
        self.deployment, self.every = deployment, every
        self.stop_event = threading.Event()
        self.peak = {"superlink": 0.0, "server_superexec_tree": 0.0, "deployment": 0.0}
        self.superlink_samples: list[float] = []

    def run(self) -> None:
        link = self.deployment.superlink
        server_exec = self.deployment.superexecs.get("superlink")
        while not self.stop_event.wait(self.every):
            now = {
                "superlink": rss_mb(link.pid) if link else 0.0,
                "server_superexec_tree": tree_rss_mb(server_exec.pid) if server_exec else 0.0,
                "deployment": sum(tree_rss_mb(p.pid) for p in self.deployment.processes),
            }
            self.superlink_samples.append(now["superlink"])
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fraction-fit", type=float, default=0.25)
    parser.add_argument("--sample-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load-supernodes.json"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fedapp-load-")).resolve()
    run_dir = workdir / "run"
    overrides = {"num-server-rounds": args.rounds, "local-epochs": 1, "fraction-fit": args.fraction_fit,
                 "min-available-clients": args.nodes, "output-dir": str(run_dir)}
    load_before = load_average()
    timings: dict[str, float] = {}
    started = time.monotonic()
    certs = make_certs(workdir / "certs", args.nodes)
    with LocalDeployment(workdir, certs=certs) as deployment:
        deployment.start_superlink()
        timings["superlink_up_s"] = time.monotonic() - started
        for i in range(args.nodes):
            deployment.register(deployment.key_path(i).with_suffix(".pub"), name=f"supernode-{i}")
        timings["registered_s"] = time.monotonic() - started
        superlink_idle_mb = rss_mb(deployment.superlink.pid)  # type: ignore[union-attr]
        for i in range(args.nodes):
            deployment.start_supernode(i, args.nodes)
        deployment.wait_online(args.nodes, timeout=max(300.0, 15.0 * args.nodes))
        timings["all_online_s"] = time.monotonic() - started
        superlink_connected_mb = rss_mb(deployment.superlink.pid)  # type: ignore[union-attr]
        sampler = Sampler(deployment, args.sample_seconds)
        sampler.start()
        try:
            outcome = deployment.run(overrides, timeout=args.timeout, echo=True)
        finally:
            sampler.stop_event.set()
            sampler.join(timeout=10)
        timings["run_s"] = outcome.seconds
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = {
        "benchmark": "load",
        "machine": machine_info(loadavg_before=load_before, loadavg_after=load_average()),
        "config": {"nodes": args.nodes, "rounds": args.rounds, "fraction_fit": args.fraction_fit,
                   "algorithm": "fedavg", "dataset": "ml-digits", "backbone": "default (small CNN)",
                   "tls": True, "supernode_auth": True, "isolation": "process"},
        "status": outcome.status,
        "superlink_rss_mb": {"after_start": superlink_idle_mb, "all_nodes_connected": superlink_connected_mb,
                             "peak_during_run": sampler.peak["superlink"]},
        "server_superexec_tree_peak_rss_mb": sampler.peak["server_superexec_tree"],
        "deployment_peak_rss_mb": sampler.peak["deployment"],
        "rounds": [{"round": r["round"], "round_seconds": r["round_seconds"], "fit_seconds": r.get("fit_seconds"),
                    "clients_selected": r["clients_selected"], "clients_ok": r["clients_ok"],
                    "clients_failed": r["clients_failed"]} for r in rows],
        "final": outcome.summary.get("final", {}),
        "timings_s": timings,
        "workdir": str(workdir),
    }
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
