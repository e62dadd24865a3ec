"""The failure paths of the project's commands, as a careless or hostile user would find them.

Nothing of a run survives Ctrl-C/SIGTERM (process tree); a refused command changes no run
directory; failed and interrupted runs are marked; data files cannot run code; input mistakes are
one-line errors naming the key, file or value, never tracebacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

import fedapp.config as config_module
from fedapp.config import ConfigError
from fedapp.data.cifar import read_cifar10
from fedapp.data.files import CorruptDataFileError
from fedapp.data.safepickle import UnsafePickleError, load_data_pickle
from fedapp.inprocess import run_inprocess
from fedapp.processes import ProcessTree, summarize_stopped
from fedapp.report import main as report_main
from fedapp.results import PROJECT_ROOT, RunFailedError, load_run, mark_run, read_rows
from fedapp.simulate import main as simulate_main
from fedapp.simulate import parse_overrides

BASE = {"dataset": "lt-digits", "partition": "iid", "local-epochs": 1, "min-partition-size": 5}
TEST_TOKEN = "FEDAPP_TEST_TOKEN"


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """PNG plots cost seconds of matplotlib per run and are not what these tests check."""
    monkeypatch.setattr("fedapp.plots.plot_run", lambda rows, out_dir, task: [])


def c_string(values: dict) -> str:
    from fedapp.simulate import to_override_string

    return to_override_string(values)


def tree_hash(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 1-round run with a checkpoint (copied by each test that damages it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fedapp.plots.plot_run", lambda rows, out_dir, task: [])
        run_inprocess({**BASE, "num-server-rounds": 1, "checkpoint-every": 1, "output-dir": str(run_dir)}, 2)
    return run_dir


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


def rewrite_checkpoint(run_dir: Path, change) -> None:
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as archive:
        members = {name: change(name, archive[name]) for name in archive.files}
    with (run_dir / "checkpoint.npz").open("wb") as handle:
        np.savez(handle, **members)


# ------------------------------------------------------------------- 1. processes, Ctrl-C, SIGTERM
def test_process_tree_stops_children_that_left_the_session_and_orphans(tmp_path):
    tree = ProcessTree()
    # The child starts a grandchild in a new session (as the SuperLink starts its SuperExec) and
    # exits at once, so the grandchild is re-parented to init: only the token still ties it to us.
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True); "
              "time.sleep(0.5)")
    child = tree.popen([sys.executable, "-c", script], start_new_session=True)
    child.wait(timeout=30)
    deadline = time.monotonic() + 10
    while len(tree.members()) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = tree.members()
    assert len(orphans) == 1 and orphans[0].ppid() != child.pid
    stopped = tree.stop(grace=5)
    assert len(stopped) == 1 and not tree.still_running()
    assert not orphans[0].is_running() or orphans[0].status() == psutil.STATUS_ZOMBIE
    assert summarize_stopped(stopped).startswith("1 process (")


def test_process_tree_kills_what_ignores_sigterm():
    tree = ProcessTree()
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"
    process = tree.popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    assert len(tree.stop(grace=1)) == 1
    assert process.poll() is not None and time.monotonic() - started < 30


def _start_simulate(tmp_path: Path, engine: str, config: dict) -> tuple[subprocess.Popen, str, list[str]]:
    token = uuid.uuid4().hex
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", **{TEST_TOKEN: token})
    process = subprocess.Popen(
        [sys.executable, "-m", "fedapp.simulate", "--engine", engine, "--nodes", "2", "-c", c_string(config)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, token, lines


def _survivors(token: str) -> list[str]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TEST_TOKEN) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid}:{' '.join(proc.cmdline())[:80]}")
                proc.kill()  # started by this test's command
        except (psutil.Error, OSError):
            continue
    return found


def _wait_for(lines: list[str], text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in list(lines)):
            return True
        time.sleep(0.2)
    return False


def _assert_interrupted(process: subprocess.Popen, lines: list[str], token: str, run_dir: Path) -> None:
    assert process.wait(timeout=180) == 130, "".join(lines)[-3000:]
    time.sleep(3)
    assert _survivors(token) == [], "processes of the run survived Ctrl-C"
    text = "".join(lines)
    assert "Traceback (most recent call last)" not in text.split("interrupted:")[-1]
    assert "interrupted:" in text
    if run_dir.exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        time.sleep(5)  # nothing may finish the run behind our back and overwrite the marker
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_sigint_while_the_superlink_starts_leaves_no_process(tmp_path):
    run_dir = tmp_path / "run"
    process, token, lines = _start_simulate(tmp_path, "flower", {**BASE, "num-server-rounds": 3,
                                                                 "output-dir": str(run_dir)})
    assert _wait_for(lines, "[simulate]", 120), "".join(lines)
    time.sleep(1.0)  # the SuperLink is starting now
    process.send_signal(signal.SIGINT)
    _assert_interrupted(process, lines, token, run_dir)


@pytest.mark.slow
def test_sigint_mid_run_stops_every_process_and_marks_the_run(tmp_path):
    run_dir = tmp_path / "run"
    process, token, lines = _start_simulate(tmp_path, "flower", {**BASE, "num-server-rounds": 30,
                                                                 "output-dir": str(run_dir)})
    assert _wait_for(lines, "[round 1/", 600), "".join(lines)[-3000:]
    process.send_signal(signal.SIGINT)
    _assert_interrupted(process, lines, token, run_dir)
    text = "".join(lines)
    assert "stopped" in text and "flower-superlink" in text  # named only after they were stopped
    assert read_rows(run_dir / "metrics.jsonl")[0]["round"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_process_marks_the_run_interrupted(tmp_path, sig):
    run_dir = tmp_path / "run"
    process, token, lines = _start_simulate(tmp_path, "inprocess", {**BASE, "num-server-rounds": 50,
                                                                    "output-dir": str(run_dir)})
    assert _wait_for(lines, "[round 1/", 300), "".join(lines)[-3000:]
    process.send_signal(sig)
    _assert_interrupted(process, lines, token, run_dir)
    assert report_main([str(run_dir), "--out", str(tmp_path / "r.png")]) == 2  # nothing completed to report


# -------------------------------------------------- 2. and 7. a refused command changes nothing
@pytest.mark.parametrize("damage, message", [
    ("nan", "non-finite"), ("shape", "shape"), ("truncate", "corrupt or unreadable"),
    ("lr", "differs from the checkpoint's in lr"), ("device", "device='cudaXYZ' is not allowed"),
    ("rounds", "num-server-rounds=1 is not allowed with resume"),
])
def test_a_refused_resume_leaves_the_run_directory_untouched(finished_run, tmp_path, capsys, damage, message):
    run_dir = copy_run(finished_run, tmp_path)
    extra = {"num-server-rounds": 3}
    if damage == "nan":
        rewrite_checkpoint(run_dir, lambda n, a: np.full_like(a, np.nan) if n == "param_0000" else a)
    elif damage == "shape":
        rewrite_checkpoint(run_dir, lambda n, a: a[..., :1] if n == "param_0000" else a)
    elif damage == "truncate":
        path = run_dir / "checkpoint.npz"
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "lr":
        extra["lr"] = 0.1
    elif damage == "device":
        extra["device"] = "cudaXYZ"
    else:
        extra["num-server-rounds"] = 1
    before = tree_hash(run_dir)
    code = simulate_main(["--engine", "inprocess", "--nodes", "2", "-c",
                          c_string({**BASE, "resume": str(run_dir), **extra})])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error:") and "Traceback" not in err
    assert tree_hash(run_dir) == before
    assert load_run(run_dir)["summary"]["final"]  # fedapp.report can still read it


@pytest.mark.parametrize("engine", ["inprocess", "flower"])
def test_task_mismatch_is_refused_before_any_directory_or_process(tmp_path, capsys, engine):
    run_dir = tmp_path / "deep" / "run"
    started = time.monotonic()
    code = simulate_main(["--engine", engine, "--nodes", "2", "-c",
                          c_string({**BASE, "dataset": "ml-digits", "algorithm": "fedloge", "output-dir": str(run_dir)})])
    err = capsys.readouterr().err
    assert code == 2 and "algorithm='fedloge' needs a single-label dataset" in err
    assert not (tmp_path / "deep").exists()
    assert time.monotonic() - started < 60  # no SuperLink, no Ray


def test_a_refused_resume_under_the_flower_engine_starts_nothing(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    rewrite_checkpoint(run_dir, lambda n, a: np.full_like(a, np.nan) if n == "param_0000" else a)
    before = tree_hash(run_dir)
    code = simulate_main(["--nodes", "2", "-c", c_string({**BASE, "resume": str(run_dir), "num-server-rounds": 3})])
    assert code == 2 and "non-finite" in capsys.readouterr().err
    assert tree_hash(run_dir) == before  # no superlink.log or simulation.log either


# --------------------------------------------------------------- 3. failed runs are marked, exit 1
def test_a_run_in_which_every_client_fails_exits_non_zero_and_is_marked(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = simulate_main(["--engine", "inprocess", "--nodes", "2", "-c",
                          c_string({**BASE, "num-server-rounds": 2, "lr": 1e12, "output-dir": str(run_dir)})])
    err = capsys.readouterr().err
    assert code == 1 and "no round aggregated any update" in err and "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "no round aggregated" in summary["reason"]
    assert summary["rounds_skipped"] == 2
    assert report_main([str(run_dir), "--out", str(tmp_path / "r.png")]) == 2
    assert "skipped" in capsys.readouterr().err


def test_every_client_failing_in_the_last_round_fails_the_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("FEDAPP_FAULT_INJECTION", "raise:0:2,raise:1:2")
    with pytest.raises(RunFailedError, match="every client of the last round"):
        run_inprocess({**BASE, "num-server-rounds": 2, "output-dir": str(run_dir)}, 2)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_report_skips_failed_and_interrupted_runs(finished_run, tmp_path, capsys):
    good = copy_run(finished_run, tmp_path)
    stopped = tmp_path / "stopped"
    shutil.copytree(finished_run, stopped)
    (stopped / "summary.json").unlink()
    mark_run(stopped, "interrupted", "interrupted (SIGINT)", "singlelabel")
    assert report_main([str(good), str(stopped), "--out", str(tmp_path / "r.png")]) == 0
    captured = capsys.readouterr()
    assert f"skipped {stopped}: interrupted" in captured.err
    assert captured.out.count("| fedavg") == 1


def test_mark_run_keeps_a_completed_summary_on_interrupt_and_a_specific_failure(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    mark_run(run_dir, "interrupted", "late Ctrl-C", "singlelabel")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    mark_run(run_dir, "failed", "a check failed", "singlelabel")
    mark_run(run_dir, "failed", "a later, vaguer failure", "singlelabel")
    assert json.loads((run_dir / "summary.json").read_text())["reason"] == "a check failed"


# ---------------------------------------------------------------- 4. data files cannot run code
class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": _Hostile(marker), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(CorruptDataFileError, match=r"data_batch_1.*(posix|os)\.system"):
        read_cifar10(tmp_path)
    with pytest.raises(UnsafePickleError):
        load_data_pickle(folder / "test_batch")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_restricted_unpickler_reads_numpy_data(tmp_path, protocol):
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [1, 2], "n": np.int64(3),
            "names": (b"a", "b"), "f": 1.5, "flags": {True, None is None}}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_data_pickle(path, encoding="latin1")
    assert np.array_equal(loaded[b"data"], data[b"data"]) and loaded["labels"] == [1, 2] and loaded["n"] == 3
    assert loaded["names"] == (b"a", "b") and loaded["flags"] == {True}


# ----------------------------------------------------- 5. one-line errors instead of tracebacks
@pytest.mark.parametrize("items, message", [
    (["algorithm=fedprox"], "-c 'algorithm=\"fedprox\"'"),
    (["seed"], "'seed' is not a key=value item"),
    (["seed="], "'seed=' is not a key=value item"),
    (["seed=1 seed=2"], "seed given more than once"),
    (["nothing.toml"], "no such file"),
])
def test_malformed_run_config_items_are_named(items, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_overrides(items)
    assert message in str(info.value)


def test_well_formed_items_parse_as_flower_does():
    assert parse_overrides(['algorithm="fedprox" seed=3 lr=0.5 use-ladm=false']) == {
        "algorithm": "fedprox", "seed": 3, "lr": 0.5, "use-ladm": False}


@pytest.mark.parametrize("config, message", [
    ('algorithm=fedprox', "a string value must be quoted"),
    ('device="cudaXYZ"', "device='cudaXYZ' is not allowed"),
    ('seed=-1', "seed=-1 is not allowed"),
    ('output-dir="/proc/x"', "output-dir='/proc/x' cannot be created"),
    ('output-dir="{file}"', "is a file, not a directory"),
    ('output-dir="{file}/sub"', "which is a file"),
])
def test_simulate_input_mistakes_are_one_line_errors(tmp_path, capsys, config, message):
    (tmp_path / "afile").write_text("x")
    code = simulate_main(["--engine", "inprocess", "--nodes", "2", "-c",
                          config.replace("{file}", str(tmp_path / "afile"))])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and err.startswith("error:")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_broken_preset_names_its_file(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("algorithm: [fedavg\n")
    monkeypatch.setattr(config_module, "PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"preset='broken': .*broken\.yaml is not valid YAML"):
        config_module.load_preset("broken")


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"), ("file", "a file"), ("empty", "missing config.yaml, metrics.jsonl"),
    ("bad-summary", "summary.json is not valid JSON"), ("bad-config", "config.yaml is not valid YAML"),
])
def test_report_on_something_that_is_not_a_run(finished_run, tmp_path, capsys, setup, message):
    target = tmp_path / "target"
    if setup == "file":
        target.write_text("x")
    elif setup == "empty":
        target.mkdir()
    elif setup in ("bad-summary", "bad-config"):
        shutil.copytree(finished_run, target)
        name = "summary.json" if setup == "bad-summary" else "config.yaml"
        (target / name).write_text("{not: [valid")
    assert report_main([str(target), "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:")


def test_report_reads_a_run_whose_last_metrics_line_is_torn(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"round": 2, "test_acc')
    assert [r["round"] for r in read_rows(run_dir / "metrics.jsonl")] == [1]
    assert report_main([str(run_dir), "--out", str(tmp_path / "r.png")]) == 0
    (run_dir / "metrics.jsonl").write_text('{"round": 1, "te\n{"round": 2}\n')  # damage before the last line
    assert report_main([str(run_dir), "--out", str(tmp_path / "r.png")]) == 2
    assert "line 1 is not JSON" in capsys.readouterr().err


def test_report_out_that_cannot_be_written(finished_run, tmp_path, capsys):
    assert report_main([str(finished_run), "--out", str(tmp_path)]) == 2
    assert report_main([str(finished_run), "--out", "/proc/x/report.png"]) == 2
    assert capsys.readouterr().err.count("error: --out=") == 2


# ------------------------------------------------- 6. no empty or unmarked run directory is left
def test_a_refused_new_run_creates_no_directory(tmp_path, capsys):
    run_dir = tmp_path / "a" / "b" / "run"
    for config in ({"device": "cuda:99"}, {"seed": -1}, {"alpha": 0.0}, {"min-available-clients": 5}):
        code = simulate_main(["--engine", "inprocess", "--nodes", "2", "-c",
                              c_string({**BASE, **config, "output-dir": str(run_dir)})])
        assert code == 2, capsys.readouterr().err
    assert not (tmp_path / "a").exists()
