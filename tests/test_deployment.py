"""Real networked deployment on loopback: SuperLink, SuperNodes and the flwr CLI as real processes.

The slow tests drive ``fedapp.deploy.LocalDeployment`` (the harness behind
``scripts/deploy_local.py``): (a) insecure, 2 SuperNodes, 2 rounds through the script's ``main``;
(b) TLS + SuperNode authentication: registered nodes run, an unregistered key and a node without
the CA are refused; (c) a SuperNode killed mid-run; (d) Flower's Ray simulation against an existing
Ray cluster started with ``ray start --head`` on 127.0.0.1. Each bounds its waits and stops every
process it started by PID. Deployment mode starts a fresh ClientApp process per message, so the
runs are tiny: 2 rounds, 1 local epoch, the embedded ml-digits data.

The fast tests check what a deployment depends on: the FAB (the app code each ``flwr run`` ships)
holds every module of the app, the CLI connection entry, and the process-tree cleanup.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from fedapp.deploy import (
    LocalDeployment,
    descendants,
    main as deploy_main,
    make_certs,
    stop_tree,
    stop_trees,
)
from fedapp.simulate import free_port, main as simulate_main, to_override_string
from tests.conftest import assert_finished

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("fedapp", "strategies", "clients", "partitions")
TINY_RUN = {"num-server-rounds": 2, "local-epochs": 1}
RUN_TIMEOUT = 900.0  # seconds for one 2-round deployment run on a loaded 2-core CI machine

needs_cert_tools = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("ssh-keygen")),
    reason="openssl and ssh-keygen are needed for TLS certificates and SuperNode keys",
)


def _alive_descendants() -> list[int]:
    """This test process's living (non-zombie) descendants."""
    alive = []
    for pid, _ in descendants(os.getpid()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


# --------------------------------------------------------------------------------------------
# Fast checks


def _project_files() -> dict[str, Path]:
    """The files ``flwr run`` would collect, minus the virtual environment and .git (never shipped)."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == ROOT and d in {".venv", ".git"})]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                files[path.relative_to(ROOT).as_posix()] = path
    return files


def test_fab_ships_every_module_of_the_app():
    """Every .py of the app packages reaches the SuperNodes: flwr's FAB build silently drops
    ``**/test_*.py`` and ``**/*_test.py`` and everything .gitignore matches."""
    from flwr.cli.build import build_fab_from_files

    files = _project_files()
    fab, _ = build_fab_from_files(files)
    shipped = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    modules = sorted(p for p in files if p.endswith(".py") and p.split("/")[0] in APP_PACKAGES
                     and "__pycache__" not in p)
    assert "fedapp/client_app.py" in modules and "fedapp/data/__init__.py" in modules
    missing = [p for p in modules if p not in shipped]
    assert not missing, (f"the FAB lacks {missing}: flwr drops files named test_*.py / *_test.py and "
                         "files matched by .gitignore (anchor patterns like /data/); rename or re-anchor")


def test_secure_by_default_needs_certificates(tmp_path):
    with pytest.raises(ValueError, match="insecure=True"):
        LocalDeployment(tmp_path / "w")
    with pytest.raises(ValueError, match="lacks ca.crt"):
        LocalDeployment(tmp_path / "w", certs=tmp_path)
    with pytest.raises(ValueError, match="connection="):
        LocalDeployment(tmp_path / "w", insecure=True, connection="a.b")


def test_connection_entry_in_isolated_flwr_home(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "server.pem", "server.key"):
        (certs / name).write_text("x")
    secure = LocalDeployment(tmp_path / "s", certs=certs, connection="lab")
    secure.port = 9092
    conf = tomllib.loads(secure.write_connection().read_text())
    assert conf["superlink"]["default"] == "lab"
    assert conf["superlink"]["lab"] == {"address": "127.0.0.1:9092",
                                        "root-certificates": str(certs.resolve() / "ca.crt")}
    insecure = LocalDeployment(tmp_path / "i", insecure=True)
    insecure.port = 9093
    conf = tomllib.loads(insecure.write_connection().read_text())
    assert conf["superlink"]["local-deployment"] == {"address": "127.0.0.1:9093", "insecure": True}
    assert secure.env(secure.cli_home)["FLWR_HOME"] == str(secure.cli_home)


def test_stop_tree_kills_descendants_that_left_the_process_group(tmp_path):
    # A child that starts a grandchild in a new session (as flower-superlink does with SuperExec):
    # a process-group kill alone would leave the grandchild running.
    script = "setsid sleep 300 & sleep 300 & wait"
    parent = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    tree: list[tuple[int, int]] = []
    while time.monotonic() < deadline and len(tree) < 2:
        time.sleep(0.1)
        tree = descendants(parent.pid)
    assert len(tree) >= 2, tree
    stop_tree(parent, grace=5)
    assert parent.poll() is not None
    time.sleep(0.3)
    for pid, _ in tree:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", pid


def test_stop_trees_stops_many_trees_within_one_grace_period():
    # Parents that ignore SIGTERM, each with a grandchild in a new session: SIGKILL after one
    # shared grace period takes them all, instead of one grace period per tree.
    script = "trap '' TERM; setsid sleep 300 & sleep 300 & wait"
    parents = [subprocess.Popen(["bash", "-c", script], start_new_session=True) for _ in range(4)]
    deadline = time.monotonic() + 10
    trees: list[list[tuple[int, int]]] = []
    while time.monotonic() < deadline:
        trees = [descendants(p.pid) for p in parents]
        if all(len(tree) >= 2 for tree in trees):
            break
        time.sleep(0.1)
    assert all(len(tree) >= 2 for tree in trees), trees
    started = time.monotonic()
    stop_trees(parents, grace=2)
    assert time.monotonic() - started < 2 * 4, "stopped one tree after the other"
    assert all(p.poll() is not None for p in parents)
    time.sleep(0.3)
    for tree in trees:
        for pid, _ in tree:
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", pid


def test_deploy_cli_fails_early_on_bad_input(capsys):
    assert deploy_main(["--nodes", "0", "--insecure"]) == 2
    assert "--nodes=0" in capsys.readouterr().err
    assert deploy_main(["--insecure", "-c", 'algorithm="no-such-algorithm"']) == 2
    assert "no-such-algorithm" in capsys.readouterr().err
    assert not _alive_descendants()


# --------------------------------------------------------------------------------------------
# (a) insecure: the script end to end


@pytest.mark.slow
def test_insecure_deployment_two_supernodes_two_rounds(tmp_path, capsys):
    run_dir = tmp_path / "run"
    values = dict(TINY_RUN, **{"output-dir": str(run_dir)})
    code = deploy_main(["--nodes", "2", "--insecure", "--workdir", str(tmp_path / "work"),
                        "--timeout", str(RUN_TIMEOUT), "-c", to_override_string(values)])
    out = capsys.readouterr().out
    assert code == 0, out + (tmp_path / "work" / "flwr-run.log").read_text()[-3000:]
    assert out.strip().splitlines()[-1] == f"results: {run_dir}"
    rows, _ = assert_finished(run_dir, 2)
    assert [r["clients_ok"] for r in rows] == [2, 2]
    assert "INSECURE" in out
    superlink_log = (tmp_path / "work" / "superlink.log").read_text()
    assert "Option `--insecure` was set" in superlink_log
    assert not _alive_descendants(), "the script left processes running"


def _processes_under(directory: Path) -> list[int]:
    """PIDs whose working directory is inside ``directory`` (the harness starts each process there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(directory):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_ctrl_c_stops_everything_the_script_started(tmp_path):
    workdir = tmp_path / "work"
    log = tmp_path / "script.log"
    script = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "deploy_local.py"), "--nodes", "2", "--insecure",
         "--workdir", str(workdir), "-c", to_override_string(dict(TINY_RUN, **{"output-dir": str(tmp_path / "run")}))],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 300
        while "SuperNodes online" not in log.read_text():
            assert script.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert len(_processes_under(workdir)) >= 3  # SuperLink, 2 SuperNodes (+ SuperExecs, flwr run)
        script.send_signal(signal.SIGINT)
        assert script.wait(timeout=120) == 130
        assert "interrupted: stopped the SuperLink and SuperNodes" in log.read_text()
        time.sleep(1)
        assert not _processes_under(workdir), "processes survived Ctrl-C"
    finally:
        stop_tree(script)


# --------------------------------------------------------------------------------------------
# (b) TLS + SuperNode authentication


@pytest.mark.slow
@needs_cert_tools
def test_tls_and_supernode_auth_only_registered_nodes_join(tmp_path):
    certs = make_certs(tmp_path / "certs", nodes=3)  # keys 0, 1 registered; key 2 never
    with LocalDeployment(tmp_path / "work", certs=certs) as deployment:
        deployment.start_superlink()
        link_log = deployment.superlink.log()  # type: ignore[union-attr]
        assert "--insecure" not in " ".join(deployment.superlink.argv)  # type: ignore[union-attr]
        assert "SuperNode authentication is disabled" not in link_log
        for i in (0, 1):
            deployment.register(deployment.key_path(i).with_suffix(".pub"), name=f"supernode-{i}")
        for i in (0, 1):
            deployment.start_supernode(i, 2)
        unregistered = deployment.start_supernode(1, 2, key_index=2, max_retries=0, name="unregistered")
        no_ca = deployment.start_supernode(0, 2, with_ca=False, max_retries=0, name="no-ca")
        online = deployment.wait_online(2)

        # flwr 1.41 reports exit code 305 ("Failed to initialize the connection to the SuperLink") in the
        # log; the process status is 305 or, when its SuperExec child is still starting, 1 (seen in CI).
        assert unregistered.wait(timeout=120) != 0, unregistered.log()[-2000:]
        assert "Exit Code: 305" in unregistered.log()
        assert "[code: 2004] Failed to activate SuperNode" in unregistered.log()
        assert no_ca.wait(timeout=120) != 0, no_ca.log()[-2000:]
        assert "CERTIFICATE_VERIFY_FAILED" in no_ca.log()
        assert len(online) == 2
        assert len([n for n in deployment.nodes() if n["status"] == "online"]) == 2

        run_dir = tmp_path / "run"
        outcome = deployment.run(dict(TINY_RUN, **{"output-dir": str(run_dir)}), timeout=RUN_TIMEOUT, echo=False)
        assert outcome.status == "finished:completed"
        rows, _ = assert_finished(run_dir, 2)
        assert [(r["clients_selected"], r["clients_ok"]) for r in rows] == [(2, 2), (2, 2)]
    assert not _alive_descendants()


# --------------------------------------------------------------------------------------------
# (c) a SuperNode crashes in the middle of a run


@pytest.mark.slow
def test_supernode_killed_mid_run_round_goes_on_with_the_others(tmp_path):
    run_dir = tmp_path / "run"
    with LocalDeployment(tmp_path / "work", insecure=True) as deployment:
        deployment.start_superlink()
        nodes = [deployment.start_supernode(i, 3) for i in range(3)]
        deployment.wait_online(3)
        killed = threading.Event()
        done = threading.Event()

        def crash_node_2_after_round_1() -> None:
            # metrics.jsonl gets its first line when round 1 ends: round 2 has just been sent out.
            while not done.wait(0.5):
                metrics = run_dir / "metrics.jsonl"
                if metrics.is_file() and metrics.read_text().strip():
                    deployment.kill(nodes[2], signal.SIGKILL)
                    killed.set()
                    return

        watcher = threading.Thread(target=crash_node_2_after_round_1, daemon=True)
        watcher.start()
        try:
            outcome = deployment.run(dict(TINY_RUN, **{"output-dir": str(run_dir)}), timeout=RUN_TIMEOUT,
                                     echo=False)
        finally:
            done.set()
            watcher.join(timeout=60)
        assert killed.is_set(), "round 1 never ended"
        assert nodes[2].popen.returncode == -signal.SIGKILL
        rows, _ = assert_finished(run_dir, 2)
        assert (rows[0]["clients_selected"], rows[0]["clients_ok"], rows[0]["clients_failed"]) == (3, 3, 0)
        assert (rows[1]["clients_ok"], rows[1]["clients_failed"]) == (2, 1), rows[1]
        server_log = "".join(outcome.lines)
        assert "round 2: a client failed" in server_log
        assert "Node Unavailable" in server_log  # the SuperLink's error reply after missed heartbeats
        assert outcome.status == "finished:completed"
    assert not _alive_descendants()


# --------------------------------------------------------------------------------------------
# (d) Flower's Ray simulation on an existing Ray cluster (loopback head node)


@pytest.mark.slow
def test_simulation_runs_on_an_existing_ray_cluster(tmp_path, monkeypatch):
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    # A short private temp dir: Ray's socket paths must stay under 107 characters, and
    # `ray_current_cluster` lands there instead of /tmp/ray, so other Ray users on this machine
    # never attach to this cluster by accident.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    # --block keeps `ray start` in the foreground as the parent of GCS/raylet, so the cluster is
    # stopped by PID (stop_tree) instead of `ray stop`, which would stop every Ray on the machine.
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(200 * 1024 * 1024),
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp_dir)],
        env=env, stdout=open(tmp_path / "ray-head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text(errors="replace"):
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start --head did not come up in 120 s"
            time.sleep(1)
        monkeypatch.setenv("RAY_ADDRESS", address)
        run_dir = tmp_path / "run"
        values = {"num-server-rounds": 1, "local-epochs": 1, "output-dir": str(run_dir)}
        code = simulate_main(["--nodes", "2", "--flwr-home", str(tmp_path / "flwr"), "--timeout", "600",
                              "-c", to_override_string(values)])
        assert code == 0, (run_dir / "simulation.log").read_text()[-3000:]
        assert_finished(run_dir, 1)
        # The simulation attached to this cluster as a driver instead of starting its own Ray.
        logs = list((temp_dir / "session_latest" / "logs").glob("python-core-driver-*"))
        assert logs, sorted(p.name for p in (temp_dir / "session_latest" / "logs").iterdir())
    finally:
        stop_tree(head, grace=20)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# ClientApp cold start: what a fresh ClientApp process imports, and the node's partition cache


def test_partition_cache_round_trip_gives_the_clients_data(tmp_path):
    import numpy as np

    from fedapp.config import RunConfig
    from fedapp.data import _SPLIT_FIELDS, federate
    from fedapp.data.partition_cache import cache_key, load_partition, save_partition

    for dataset in ("lt-digits", "ml-digits"):
        config = RunConfig(dataset=dataset, seed=3, alpha=0.5)
        split = federate(config, 3)
        path = tmp_path / f"{dataset}.npz"
        assert save_partition(path, split, 1)
        cached = load_partition(path, 1, 3)
        assert cached is not None
        for name in ("name", "task", "num_classes", "class_names", "input_shape"):
            assert getattr(cached.bundle, name) == getattr(split.bundle, name), name
        np.testing.assert_array_equal(cached.bundle.class_counts(), split.bundle.class_counts())
        original, loaded = split.train_set(1), cached.train_set(1)
        assert len(loaded) == len(original) > 0
        np.testing.assert_array_equal(loaded.labels, original.labels)
        for i in (0, len(original) - 1):
            for a, b in zip(loaded[i], original[i]):
                assert torch_equal(a, b)
        if split.local_test_set(1) is None:
            assert cached.local_test_set(1) is None
        else:
            np.testing.assert_array_equal(cached.local_test_set(1).labels, split.local_test_set(1).labels)
            assert torch_equal(cached.local_test_set(1)[0][0], split.local_test_set(1)[0][0])
        # Anything that changes the split changes the file name.
        keys = {cache_key(c, _SPLIT_FIELDS, n, p) for c, n, p in [
            (config, 3, 1), (config, 3, 2), (config, 4, 1), (config.replace(seed=4), 3, 1),
            (config.replace(alpha=0.1), 3, 1)]}
        assert len(keys) == 5
    assert load_partition(tmp_path / "missing.npz", 0, 3) is None
    (tmp_path / "torn.npz").write_bytes(b"not a zip")
    assert load_partition(tmp_path / "torn.npz", 0, 3) is None


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))


_PROBE = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
import fedapp.client_app
from fedapp.config import RunConfig
from fedapp.data.partition_cache import node_split
imported = sorted(m for m in ("sklearn", "torchvision", "torch._dynamo", "ray", "clients.fedncalign_ml",
                              "strategies.fedavg", "fedapp.data.digits", "fedapp.data.cifar") if m in sys.modules)
split = node_split(RunConfig(dataset="ml-digits", seed=5), 2, 1, Path(sys.argv[1]))
print(json.dumps({"imported": imported, "after_split": "sklearn" in sys.modules,
                  "labels": split.train_set(1).labels.sum(axis=0).tolist()}))
"""


def test_fresh_client_app_process_imports_only_what_it_uses(tmp_path):
    """A fresh process (as each deployment message gets) imports no other algorithm, no sklearn,
    torchvision or torch._dynamo; the second one reads its partition from the node's disk."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    answers = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "cache")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        answers.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert answers[0]["imported"] == [] and answers[1]["imported"] == []
    assert answers[0]["after_split"] is True  # the first message loads ml-digits through sklearn
    assert answers[1]["after_split"] is False  # the second reads the cached partition
    assert answers[0]["labels"] == answers[1]["labels"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


@pytest.mark.slow
def test_coldstart_benchmark_reports_fresh_processes(tmp_path):
    from benchmarks.coldstart import main as coldstart_main

    report = coldstart_main(["--repeats", "1", "--out", str(tmp_path / "coldstart.json")])
    assert json.loads((tmp_path / "coldstart.json").read_text()) == report
    results = report["results"]
    for name in ("bare_torch", "bare_torch_step", "clientapp_first", "clientapp_cached"):
        assert results[name]["seconds_median"] > 0 and results[name]["rss_mb_median"] > 0, name
    # The cached message never touches scikit-learn or torchvision; the first one builds ml-digits.
    assert results["clientapp_cached"]["heavy_modules_loaded"] == ["torch._dynamo"]
    assert "sklearn" in results["clientapp_first"]["heavy_modules_loaded"]
    assert "torchvision" not in results["clientapp_first"]["heavy_modules_loaded"]
    assert results["clientapp_cached"]["client_fn_s_median"] < results["clientapp_first"]["client_fn_s_median"]
