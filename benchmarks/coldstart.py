"""ClientApp cold start: a fresh process from its start to the first training step, next to ``import torch``.

    python -m benchmarks.coldstart [--repeats 5] [--algorithm fedavg] [--dataset ml-digits]

In a deployment every message starts a fresh ClientApp process (``flwr-clientapp``), so what
that process imports and loads before it trains is paid once per client per round. Three kinds
of fresh Python processes are started, interleaved, ``--repeats`` times each:

- ``bare_torch``: ``python -c "import torch"``, the floor any PyTorch ClientApp pays;
- ``bare_torch_step``: ``import torch`` plus one AdamW step of a one-layer model: torch's
  optimizers import ``torch._dynamo`` when they are built, a cost any PyTorch trainer pays;
- ``clientapp_first``: what ``flwr-clientapp`` runs for the first message of a node: the flwr
  ClientApp runtime module, ``fedapp.client_app``, ``client_fn`` (run config from
  ``pyproject.toml`` plus the overrides, node config ``partition-id=0 num-partitions=<n>``, an
  empty partition cache), then one optimizer step on the first batch;
- ``clientapp_cached``: the same with the node's partition already in its cache (every later
  message of the run).

``seconds`` is the wall time from starting the process until it reports the step done,
``rss_mb`` the process's peak resident memory (``ru_maxrss``). The ratios divide the medians by
``bare_torch``'s. The last line printed is one JSON object (also written to ``--out``).
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
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "coldstart.json"

BARE = """
import json, resource
import torch
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
"""

BARE_STEP = """
import json, resource
import torch
model = torch.nn.Linear(8, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.ones(4, 8)).sum().backward()
optimizer.step()
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
"""

CLIENTAPP = """
import json, resource, sys, time, tomllib
t0 = time.perf_counter()
import flwr.supernode.cli.flwr_clientapp  # what the flwr-clientapp process imports before the app
from flwr.app import Context, RecordDict
import fedapp.client_app
t_import = time.perf_counter()
from fedapp.config import RunConfig
spec = json.loads(sys.argv[1])
defaults = tomllib.loads(open(spec["pyproject"], "rb").read().decode())["tool"]["flwr"]["app"]["config"]
run_config = {**defaults, **spec["overrides"]}
node = {"partition-id": 0, "num-partitions": spec["partitions"], "partition-cache": spec["cache"], "device": "cpu"}
context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config=run_config)
client = fedapp.client_app.client_fn(context).numpy_client()  # builds the client as a message would
t_client = time.perf_counter()
from fedapp.loops import make_loader, make_optimizer
config = client.config
images, targets = next(iter(make_loader(client.train_set, config.batch_size, shuffle=True, seed=0)))
optimizer = make_optimizer(client.model.parameters(), config.optimizer, config.lr, config.weight_decay,
                           config.momentum)
loss, _ = client.loss(client.model, images, targets)
loss.backward()
optimizer.step()
t_step = time.perf_counter()
heavy = sorted(m for m in ("sklearn", "torchvision", "torch._dynamo", "ray") if m in sys.modules)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "import_s": t_import - t0, "client_fn_s": t_client - t_import, "first_step_s": t_step - t_client,
                  "modules": heavy}), flush=True)
"""


def run_child(code: str, *args: str) -> dict:
    """Start a fresh interpreter, return its report plus the wall time until it printed it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="0")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=env)
    line = process.stdout.readline() if process.stdout else ""
    seconds = time.perf_counter() - started
    _, err = process.communicate(timeout=600)
    if process.returncode != 0 or not line.strip():
        raise RuntimeError(f"child failed ({process.returncode}): {err[-2000:]}")
    return {"seconds": seconds, **json.loads(line)}


def summarize(samples: list[dict]) -> dict:
    out = {"seconds_median": statistics.median(s["seconds"] for s in samples),
           "rss_mb_median": statistics.median(s["rss_mb"] for s in samples),
           "seconds": [round(s["seconds"], 3) for s in samples]}
    for key in ("import_s", "client_fn_s", "first_step_s"):
        if key in samples[0]:
            out[f"{key}_median"] = statistics.median(s[key] for s in samples)
    if "modules" in samples[0]:
        out["heavy_modules_loaded"] = samples[0]["modules"]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithm", default="fedavg")
    parser.add_argument("--dataset", default="ml-digits")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    overrides = {"algorithm": args.algorithm, "dataset": args.dataset}
    samples: dict[str, list[dict]] = {"bare_torch": [], "bare_torch_step": [], "clientapp_first": [],
                                      "clientapp_cached": []}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        warm_cache = Path(tmp) / "warm"
        for repeat in range(args.repeats + 1):  # repeat 0 warms the page cache and the partition cache
            spec = {"pyproject": str(ROOT / "pyproject.toml"), "overrides": overrides, "partitions": args.partitions}
            bare = run_child(BARE)
            bare_step = run_child(BARE_STEP)
            first = run_child(CLIENTAPP, json.dumps({**spec, "cache": str(Path(tmp) / f"cold-{repeat}")}))
            cached = run_child(CLIENTAPP, json.dumps({**spec, "cache": str(warm_cache)}))
            if repeat:
                samples["bare_torch"].append(bare)
                samples["bare_torch_step"].append(bare_step)
                samples["clientapp_first"].append(first)
                samples["clientapp_cached"].append(cached)
    results = {name: summarize(values) for name, values in samples.items()}
    bare_s, bare_mb = results["bare_torch"]["seconds_median"], results["bare_torch"]["rss_mb_median"]
    report = {
        "benchmark": "coldstart",
        "machine": machine_info(loadavg_before=load_before, loadavg_after=load_average()),
        "config": {**overrides, "partitions": args.partitions, "repeats": args.repeats},
        "results": results,
        "ratios": {f"{name}_vs_bare_torch": {"seconds": results[name]["seconds_median"] / bare_s,
                                             "rss": results[name]["rss_mb_median"] / bare_mb}
                   for name in ("bare_torch_step", "clientapp_first", "clientapp_cached")},
    }
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
