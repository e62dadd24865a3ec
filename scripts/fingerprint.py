"""Behaviour fingerprint: a fixed set of in-process runs whose metrics must not change in a refactor.

Runs FedAvg, FedNCAlign-ML and SCAFFOLD on ml-digits and FedLoGe, Ditto and FedRoD on lt-digits
(3 rounds, seed 0, 4 nodes, one local epoch) and writes, per run, the ``summary.json`` metrics and a
SHA-256 of every ``metrics.jsonl`` line with the timing fields removed. Compare two fingerprints
with ``diff`` or ``--compare``::

    python scripts/fingerprint.py --out before.json
    ...refactor...
    python scripts/fingerprint.py --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from fedapp.inprocess import run_inprocess

RUNS = {
    "fedavg": {"algorithm": "fedavg", "dataset": "ml-digits"},
    "fedncalign-ml": {"algorithm": "fedncalign-ml", "dataset": "ml-digits"},
    "scaffold": {"algorithm": "scaffold", "dataset": "ml-digits"},
    "fedloge": {"algorithm": "fedloge", "dataset": "lt-digits"},
    "ditto": {"algorithm": "ditto", "dataset": "lt-digits"},
    "fedrod": {"algorithm": "fedrod", "dataset": "lt-digits"},
}
COMMON = {"num-server-rounds": 3, "seed": 0, "local-epochs": 1, "tensorboard": False}
TIMING = ("time", "seconds", "duration", "wall", "elapsed")


def _strip_timing(value):
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def fingerprint(name: str, overrides: dict, out_root: Path) -> dict:
    run_dir = run_inprocess({**COMMON, **overrides, "output-dir": str(out_root / name)}, num_nodes=4)
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    digest = hashlib.sha256()
    for line in lines:
        digest.update(json.dumps(_strip_timing(json.loads(line)), sort_keys=True).encode())
    return {"status": summary["status"], "final": summary.get("final"), "best": summary.get("best"),
            "rounds": len(lines), "metrics_jsonl_sha256": digest.hexdigest()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint; exit 1 if any run differs")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of the runs")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or RUNS:
            result[name] = fingerprint(name, RUNS[name], Path(tmp))
            print(f"{name}: {result[name]['status']} {result[name]['metrics_jsonl_sha256'][:16]}", flush=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [name for name in result if before.get(name) != result[name]]
        print("identical" if not differ else f"DIFFERENT: {differ}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
