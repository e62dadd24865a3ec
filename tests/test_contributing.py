"""CONTRIBUTING.md's worked example: an algorithm is its strategy module and its client module.

The test writes FedAvg's two modules under a new name into a temporary package outside this
repository, puts it on the import path, names it in ``FEDAPP_ALGORITHMS`` (the opt-in for
algorithms kept outside ``strategies/``) and runs it for one in-process round, editing no other file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

STRATEGY = '''"""MyAvg: FedAvg under another name, w_{t+1} = sum_k (n_k / n) w_{t+1}^k."""

from myavg.client import MyAvgClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from strategies.base import FederatedStrategy


class MyAvgStrategy(FederatedStrategy):
    """Example-weighted averaging of all shared tensors."""


ALGORITHM = Algorithm(
    name="my-avg", display_name="MyAvg", task="any", strategy=MyAvgStrategy, client=MyAvgClient,
    options=(Option("my-avg-note", "none", "MyAvg: a key of its own, to show keys are declared here"),),
)
'''

CLIENT = '''"""MyAvg client: FedAvg's local training."""

from clients.base import BaseClient


class MyAvgClient(BaseClient):
    """Plain local training; everything the model has travels."""
'''

RUN = '''
import json, sys
from fedapp.inprocess import run_inprocess
from fedapp.registry import display_name
run_dir = run_inprocess({"algorithm": "my-avg", "my-avg-note": "hello", "num-server-rounds": 1,
                         "local-epochs": 1, "tensorboard": False, "output-dir": sys.argv[1]}, 2)
print(json.dumps({"display": display_name("my-avg")}))
'''


def test_a_new_algorithm_runs_from_two_modules_outside_the_repository(tmp_path):
    """Two modules, FedAvg's under a new name with a key of its own, run as any declared algorithm."""
    package = tmp_path / "plugin" / "myavg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "strategy.py").write_text(STRATEGY)
    (package / "client.py").write_text(CLIENT)
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package.parent), str(ROOT)]),
               FEDAPP_ALGORITHMS="myavg.strategy")
    result = subprocess.run([sys.executable, "-c", RUN, str(run_dir)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"display": "MyAvg"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert all(math.isfinite(value) for value in summary["final"].values())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algorithm"] == "my-avg" and config["my-avg-note"] == "hello"
    assert not list(ROOT.glob("**/myavg*")), "the example must not touch the repository"
