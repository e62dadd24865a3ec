"""Bad and hostile inputs against the README's commands, counted by how each one ends.

    python scripts/hostile_inputs.py [--repo DIR] [--flower] [--only NAME,...] [--json out.json]

Runs ``python -m fedapp.simulate`` / ``fedapp.report`` / ``fedapp.tables`` from ``--repo`` (default:
this checkout) with ~80 inputs a careless or hostile user might give: malformed ``-c`` strings,
out-of-range values, broken presets, unusable output directories, damaged checkpoints and run
directories, a pickle that runs code, Ctrl-C / SIGTERM at start-up and mid-run (``--flower`` adds
the cases that start a SuperLink and Ray: several minutes on 2 cores). Each case runs in its own
temporary folder (``FEDAPP_HOME``) and prints one line; the totals are

- ``clear error``: non-zero exit, no traceback, the last stderr line says ``error:``/``interrupted:``;
- ``traceback``: a Python traceback on stderr;
- ``silently accepted``: exit 0 for an input that must be refused or must fail;
- ``data lost``: a file of an existing run directory the case protects was changed or deleted;
- ``processes left``: a process started by the command (found by an environment token every child
  inherits) still alive 5 s after the command exited (it is then killed by PID);
- ``unmarked dirs``: a run directory the command created that is empty, or has no ``summary.json``
  with a ``status``, after a refused, failed or interrupted command.

A case is "clear" only if none of the last five apply to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN_VAR = "FEDAPP_SWEEP_TOKEN"
FAST = "num-server-rounds=2 local-epochs=1"


@dataclass
class Case:
    name: str
    argv: list[str]  # after "python -m"
    setup: Callable[[Path, Path], None] | None = None  # (case dir, base run) -> None
    protect: str = ""  # relative to the case dir: a run directory whose files must not change
    run_dir: str = ""  # relative to the case dir: where the command would create its run directory
    signal_at: tuple[str, float | str, int] | None = None  # ("time", seconds | "line", text, signal)
    signal_delay: float = 0.0  # seconds between the line and the signal
    expect: str = "refuse"  # refuse: must exit non-zero; interrupt: must exit non-zero after the signal
    flower: bool = False
    timeout: float = 600.0
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the command


@dataclass
class Outcome:
    name: str
    rc: int | None
    seconds: float
    traceback: bool = False
    clear: bool = False
    silently_accepted: bool = False
    data_lost: list[str] = field(default_factory=list)
    processes_left: list[str] = field(default_factory=list)
    unmarked_dirs: list[str] = field(default_factory=list)
    last_line: str = ""


# ------------------------------------------------------------------------------------------ helpers
def simulate(*config: str, nodes: int = 3, engine: str = "inprocess") -> list[str]:
    argv = ["fedapp.simulate", "--nodes", str(nodes), "--engine", engine]
    for item in config:
        argv += ["-c", item]
    return argv


class Hostile:
    """Unpickling this calls ``touch <marker>``: the code a malicious data file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_cifar(case: Path, _base: Path) -> None:
    folder = case / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": Hostile(case / "PWNED"), b"labels": [0]}, handle, protocol=2)


def truncated_cifar(case: Path, _base: Path) -> None:
    folder = case / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    payload = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(payload[: len(payload) // 2])


def copy_base(case: Path, base: Path) -> Path:
    target = case / "run"
    shutil.copytree(base, target)
    return target


def nan_checkpoint(case: Path, base: Path) -> None:
    _rewrite_checkpoint(copy_base(case, base), lambda name, a: np.full_like(a, np.nan)
                        if name.startswith("param_") and np.issubdtype(a.dtype, np.floating) else a)


def shape_checkpoint(case: Path, base: Path) -> None:
    _rewrite_checkpoint(copy_base(case, base), lambda name, a: a[..., :1] if name == "param_0000" else a)


def _rewrite_checkpoint(run: Path, change: Callable[[str, np.ndarray], np.ndarray]) -> None:
    with np.load(run / "checkpoint.npz", allow_pickle=False) as archive:
        members = {name: change(name, archive[name]) for name in archive.files}
    with (run / "checkpoint.npz").open("wb") as handle:
        np.savez(handle, **members)


def truncated_checkpoint(case: Path, base: Path) -> None:
    path = copy_base(case, base) / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:2000])


def no_checkpoint(case: Path, base: Path) -> None:
    (copy_base(case, base) / "checkpoint.npz").unlink()


def torn_metrics(case: Path, base: Path) -> None:
    path = copy_base(case, base) / "metrics.jsonl"
    path.write_text(path.read_text() + '{"round": 3, "test_macro')


def no_summary(case: Path, base: Path) -> None:
    (copy_base(case, base) / "summary.json").unlink()


def bad_summary(case: Path, base: Path) -> None:
    (copy_base(case, base) / "summary.json").write_text("{not json")


def bad_config_yaml(case: Path, base: Path) -> None:
    (copy_base(case, base) / "config.yaml").write_text("algorithm: [unclosed\n")


def plain_file(case: Path, _base: Path) -> None:
    (case / "afile").write_text("not a directory\n")


def nonempty_dir(case: Path, base: Path) -> None:
    copy_base(case, base)


def empty_dir(case: Path, _base: Path) -> None:
    (case / "empty").mkdir()


def base_copy(case: Path, base: Path) -> None:
    copy_base(case, base)


def toml_broken(case: Path, _base: Path) -> None:
    (case / "bad.toml").write_text("seed = = 1\n")


# ------------------------------------------------------------------------------------------- cases
def cases(base_dir_name: str = "run") -> list[Case]:
    run = base_dir_name
    c: list[Case] = []
    out = 'output-dir="{case}/new"'
    # Run-config syntax and values (fail before anything starts).
    for name, item in [
        ("unknown key", "foo=1"), ("bare word algorithm", "algorithm=fedprox"), ("bare word dataset", "dataset=ml-digits"),
        ("no equals sign", "seed"), ("empty value", "seed="), ("two equals", "a=b=c"), ("seed -1", "seed=-1"),
        ("seed 1.5", "seed=1.5"), ("seed string", 'seed="x"'), ("key given twice", "seed=1 seed=2"),
        ("lr 0", "lr=0"), ("lr -1", "lr=-1"), ("lr nan", "lr=nan"),
        ("lr inf", "lr=inf"), ("batch-size 0", "batch-size=0"), ("alpha 0", "alpha=0"),
        ("fraction-fit 0", "fraction-fit=0"), ("fraction-fit 1.5", "fraction-fit=1.5"),
        ("unknown algorithm", 'algorithm="nope"'), ("unknown dataset", 'dataset="nope"'),
        ("unknown partition", 'partition="x"'), ("device cudaXYZ", 'device="cudaXYZ"'),
        ("device tpu", 'device="tpu"'), ("device cuda:7 (none visible)", 'device="cuda:7"'),
        ("unknown preset", 'preset="nope"'), ("fault-injection as a run-config key", 'fault-injection="raise:0:1"'),
        ("bool as number", "use-ladm=3"), ("checkpoint-every -1", "checkpoint-every=-1"),
        ("tau 2", "tau=2"), ("val-fraction 1", "val-fraction=1"), ("mu -1", "mu=-1"),
    ]:
        c.append(Case(f"-c {name}", simulate(f"{FAST} {out} {item}"), run_dir="new"))
    for name, item in [("rounds 0", "num-server-rounds=0"), ("rounds -3", "num-server-rounds=-3"),
                       ("rounds 2.5", "num-server-rounds=2.5")]:
        c.append(Case(f"-c {name}", simulate(f"local-epochs=1 {out} {item}"), run_dir="new"))
    c.append(Case("preset broken YAML", simulate(f'{FAST} {out} preset="_sweep_broken"'), run_dir="new"))
    c.append(Case("preset is a list", simulate(f'{FAST} {out} preset="_sweep_list"'), run_dir="new"))
    c.append(Case("-c missing .toml", simulate("{case}/missing.toml"), run_dir="new"))
    c.append(Case("-c broken .toml", simulate("{case}/bad.toml"), setup=toml_broken, run_dir="new"))
    # Output directories.
    c.append(Case("output-dir is a file", simulate(f'{FAST} output-dir="{{case}}/afile"'), setup=plain_file))
    c.append(Case("output-dir /proc/x", simulate(f'{FAST} output-dir="/proc/x"')))
    c.append(Case("output-dir under a file", simulate(f'{FAST} output-dir="{{case}}/afile/sub"'), setup=plain_file))
    c.append(Case("output-dir non-empty run", simulate(f'{FAST} output-dir="{{case}}/run"'), setup=nonempty_dir,
                  protect="run"))
    # Command-line options.
    c.append(Case("--nodes 0", simulate(FAST, nodes=0)))
    c.append(Case("--nodes -1", simulate(FAST, nodes=-1)))
    c.append(Case("--nodes abc", ["fedapp.simulate", "--nodes", "abc"]))
    c.append(Case("--engine foo", ["fedapp.simulate", "--engine", "foo"]))
    c.append(Case("--nodes 1 < min-available", simulate(f"{FAST} {out} min-available-clients=2", nodes=1), run_dir="new"))
    c.append(Case("--nodes 5000 (split impossible)", simulate(f"{FAST} {out}", nodes=5000), run_dir="new"))
    # Data files.
    c.append(Case("data-root missing", simulate(f'{FAST} {out} dataset="cifar10-lt" data-root="{{case}}/none"'),
                  run_dir="new"))
    c.append(Case("hostile pickle", simulate(f'{FAST} {out} dataset="cifar10-lt" data-root="{{case}}/data"'),
                  setup=hostile_cifar, run_dir="new"))
    c.append(Case("truncated pickle", simulate(f'{FAST} {out} dataset="cifar10-lt" data-root="{{case}}/data"'),
                  setup=truncated_cifar, run_dir="new"))
    # Algorithm / dataset combinations and training that cannot work.
    c.append(Case("fedloge on multi-label", simulate(f'{FAST} {out} algorithm="fedloge"'), run_dir="new"))
    c.append(Case("fedncalign-ml on single-label",
                  simulate(f'{FAST} {out} algorithm="fedncalign-ml" dataset="lt-digits"'), run_dir="new"))
    c.append(Case("lr 1e12 (every client fails)", simulate(f"{FAST} {out} lr=1e12"), run_dir="new"))
    c.append(Case("every client raises in the last round", simulate(f"{FAST} {out}"), run_dir="new",
                  env={"FEDAPP_FAULT_INJECTION": "raise:0:2,raise:1:2,raise:2:2"}))
    # Resume.
    resume = f'resume="{{case}}/{run}" num-server-rounds=3 local-epochs=1'
    c.append(Case("resume missing dir", simulate(f'resume="{{case}}/nothing" num-server-rounds=3 local-epochs=1')))
    c.append(Case("resume without checkpoint", simulate(resume), setup=no_checkpoint, protect=run))
    c.append(Case("resume NaN checkpoint", simulate(resume), setup=nan_checkpoint, protect=run))
    c.append(Case("resume wrong-shape checkpoint", simulate(resume), setup=shape_checkpoint, protect=run))
    c.append(Case("resume truncated checkpoint", simulate(resume), setup=truncated_checkpoint, protect=run))
    c.append(Case("resume other lr", simulate(resume + " lr=0.1"), setup=base_copy, protect=run))
    c.append(Case("resume other algorithm", simulate(resume + ' algorithm="fedprox"'), setup=base_copy, protect=run))
    c.append(Case("resume rounds <= done", simulate(f'resume="{{case}}/{run}" num-server-rounds=2 local-epochs=1'),
                  setup=base_copy, protect=run))
    c.append(Case("resume + other output-dir", simulate(resume + f" {out}"), setup=base_copy, protect=run))
    c.append(Case("resume device cudaXYZ", simulate(resume + ' device="cudaXYZ"'), setup=base_copy, protect=run))
    c.append(Case("resume device cuda:7", simulate(resume + ' device="cuda:7"'), setup=base_copy, protect=run))
    # fedapp.report
    c.append(Case("report missing dir", ["fedapp.report", "{case}/nothing"]))
    c.append(Case("report empty dir", ["fedapp.report", "{case}/empty"], setup=empty_dir))
    c.append(Case("report a file", ["fedapp.report", "{case}/afile"], setup=plain_file))
    c.append(Case("report torn metrics line", ["fedapp.report", "{case}/run", "--out", "{case}/r.png"],
                  setup=torn_metrics, protect=run))
    c.append(Case("report unfinished run", ["fedapp.report", "{case}/run", "--out", "{case}/r.png"],
                  setup=no_summary, protect=run))
    c.append(Case("report broken summary.json", ["fedapp.report", "{case}/run", "--out", "{case}/r.png"],
                  setup=bad_summary, protect=run))
    c.append(Case("report broken config.yaml", ["fedapp.report", "{case}/run", "--out", "{case}/r.png"],
                  setup=bad_config_yaml, protect=run))
    c.append(Case("report --out /proc/x.png", ["fedapp.report", "{case}/run", "--out", "/proc/x.png"],
                  setup=base_copy, protect=run))
    c.append(Case("report --out is a dir", ["fedapp.report", "{case}/run", "--out", "{case}/run"],
                  setup=base_copy, protect=run))
    c.append(Case("report no args", ["fedapp.report"]))
    # fedapp.tables (argument errors only: its runs are another command's business)
    c.append(Case("tables unknown setting", ["fedapp.tables", "nope", "--algorithms", "fedavg", "--out", "{case}/t"]))
    c.append(Case("tables unknown algorithm", ["fedapp.tables", "default", "--algorithms", "nope", "--out", "{case}/t"]))
    c.append(Case("tables --seeds 0", ["fedapp.tables", "default", "--algorithms", "fedavg", "--seeds", "0",
                                       "--out", "{case}/t"]))
    c.append(Case("tables --rounds 0", ["fedapp.tables", "default", "--algorithms", "fedavg", "--rounds", "0",
                                        "--out", "{case}/t"]))
    c.append(Case("tables --out is a file", ["fedapp.tables", "default", "--algorithms", "fedavg", "--rounds", "1",
                                             "--out", "{case}/afile"], setup=plain_file))
    c.append(Case("tables -c bare word", ["fedapp.tables", "default", "--algorithms", "fedavg", "-c", "lr=abc",
                                          "--out", "{case}/t"]))
    c.append(Case("tables --nodes 0", ["fedapp.tables", "default", "--algorithms", "fedavg", "--nodes", "0",
                                       "--out", "{case}/t"]))
    # Interruptions of the in-process engine.
    c.append(Case("SIGINT in-process mid-run", simulate(f"num-server-rounds=20 local-epochs=1 {out}"), run_dir="new",
                  signal_at=("line", "[round 1/", signal.SIGINT), expect="interrupt"))
    c.append(Case("SIGTERM in-process mid-run", simulate(f"num-server-rounds=20 local-epochs=1 {out}"), run_dir="new",
                  signal_at=("line", "[round 1/", signal.SIGTERM), expect="interrupt"))
    c.append(Case("SIGINT during resume", simulate(f'resume="{{case}}/{run}" num-server-rounds=30 local-epochs=1'),
                  setup=base_copy, signal_at=("line", "[round 3/", signal.SIGINT), expect="interrupt"))
    # The flower engine (SuperLink + Ray).
    fl = dict(flower=True, run_dir="new")
    # 1 s after "[simulate] ..." (printed just before the SuperLink starts): the SuperLink is starting.
    c.append(Case("flower: SIGINT at start-up", simulate(f"num-server-rounds=3 local-epochs=1 {out}", engine="flower"),
                  signal_at=("line", "[simulate]", signal.SIGINT), signal_delay=1.0, expect="interrupt", **fl))
    c.append(Case("flower: SIGINT mid-run", simulate(f"num-server-rounds=5 local-epochs=1 {out}", engine="flower"),
                  signal_at=("line", "[round 1/", signal.SIGINT), expect="interrupt", **fl))
    c.append(Case("flower: SIGTERM mid-run", simulate(f"num-server-rounds=5 local-epochs=1 {out}", engine="flower"),
                  signal_at=("line", "[round 1/", signal.SIGTERM), expect="interrupt", **fl))
    c.append(Case("flower: task mismatch", simulate(f'{FAST} {out} algorithm="fedloge"', engine="flower"), **fl))
    c.append(Case("flower: resume NaN checkpoint", simulate(resume, engine="flower"), setup=nan_checkpoint,
                  protect=run, flower=True))
    c.append(Case("flower: device cudaXYZ", simulate(f'{FAST} {out} device="cudaXYZ"', engine="flower"), **fl))
    return c


# --------------------------------------------------------------------------------------------- run
def snapshot(path: Path) -> dict[str, str]:
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def token_processes(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(TOKEN_VAR) == token:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def marked(run_dir: Path) -> bool:
    """A run directory a failed command left is fine if it is gone or says how it ended."""
    if not run_dir.exists():
        return True
    summary = run_dir / "summary.json"
    try:
        return "status" in json.loads(summary.read_text())
    except (OSError, ValueError):
        return False


def run_case(case: Case, repo: Path, base: Path, root: Path, index: int) -> Outcome:
    case_dir = root / f"case{index:02d}"
    case_dir.mkdir()
    if case.setup:
        case.setup(case_dir, base)
    argv = [PYTHON, "-m"] + [a.replace("{case}", str(case_dir)) for a in case.argv]
    protected = case_dir / case.protect if case.protect else None
    before = snapshot(protected) if protected else {}
    token = uuid.uuid4().hex
    env = dict(os.environ, FEDAPP_HOME=str(case_dir), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               **{TOKEN_VAR: token}, **case.env)
    started = time.monotonic()
    # As from a terminal: SIGINT at its default (a background shell would have set it to "ignore").
    process = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stdout: list[str] = []
    stderr: list[str] = []
    seen = threading.Event()

    def pump(stream, sink, watch: str | None) -> None:
        for line in stream:
            sink.append(line)
            if watch and watch in line:
                seen.set()

    watch = case.signal_at[1] if case.signal_at and case.signal_at[0] == "line" else None
    threads = [threading.Thread(target=pump, args=(process.stdout, stdout, watch), daemon=True),
               threading.Thread(target=pump, args=(process.stderr, stderr, watch), daemon=True)]
    for thread in threads:
        thread.start()
    if case.signal_at:
        kind, value, sig = case.signal_at
        if kind == "time":
            seen.wait(timeout=float(value))
        else:
            seen.wait(timeout=case.timeout)
            time.sleep(case.signal_delay)
        if process.poll() is None:
            process.send_signal(sig)
    try:
        rc = process.wait(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        rc = None
    for thread in threads:
        thread.join(timeout=5)
    seconds = time.monotonic() - started
    time.sleep(5)
    left = token_processes(token)
    names = []
    for proc in left:
        try:
            names.append(f"{proc.pid}:{proc.name()}")
            proc.kill()  # started by this case's command
        except psutil.Error:
            pass
    err_text = "".join(stderr)
    lines = [line for line in err_text.splitlines() if line.strip()]
    outcome = Outcome(case.name, rc, seconds, last_line=(lines[-1] if lines else "")[:200])
    outcome.traceback = "Traceback (most recent call last)" in err_text
    outcome.processes_left = names
    if protected:
        after = snapshot(protected)
        outcome.data_lost = sorted(k for k in before if after.get(k) != before[k])
    if rc == 0:
        outcome.silently_accepted = True
    if case.run_dir:
        new = case_dir / case.run_dir
        if rc != 0 and new.exists() and (not any(new.iterdir()) or not marked(new)):
            outcome.unmarked_dirs.append(str(new))
    for default in (case_dir / "outputs").glob("*") if (case_dir / "outputs").is_dir() else []:
        if rc != 0 and not marked(default):
            outcome.unmarked_dirs.append(str(default))
    said = bool(lines) and (lines[-1].startswith(("error:", "interrupted:")) or ": error:" in lines[-1])
    outcome.clear = (rc not in (0, None) and said and not outcome.traceback and not outcome.data_lost
                     and not outcome.processes_left and not outcome.unmarked_dirs)
    if (case_dir / "PWNED").exists():
        outcome.data_lost.append("PWNED: the pickle ran code")
        outcome.clear = False
    return outcome


def make_base(repo: Path, root: Path) -> Path:
    base = root / "base-run"
    argv = [PYTHON, "-m"] + simulate(f'{FAST} checkpoint-every=1 output-dir="{base}"')
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    result = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not (base / "checkpoint.npz").is_file():
        raise SystemExit(f"the base run failed:\n{result.stderr[-3000:]}")
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(HERE), help="checkout whose commands to run (default: this one)")
    parser.add_argument("--flower", action="store_true", help="also the cases that start a SuperLink and Ray")
    parser.add_argument("--only", default="", help="comma-separated substrings of case names to run")
    parser.add_argument("--json", default="", help="write every outcome here")
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    selected = [c for c in cases() if (args.flower or not c.flower)
                and (not args.only or any(s in c.name for s in args.only.split(",")))]
    presets = repo / "fedapp" / "presets"
    written = [presets / "_sweep_broken.yaml", presets / "_sweep_list.yaml"]
    written[0].write_text("algorithm: [fedavg\nseed: 1\n")
    written[1].write_text("- algorithm\n- fedavg\n")
    outcomes = []
    try:
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            root = Path(tmp)
            base = make_base(repo, root)
            for index, case in enumerate(selected):
                outcome = run_case(case, repo, base, root, index)
                outcomes.append(outcome)
                flags = [n for n, on in (("TRACEBACK", outcome.traceback), ("ACCEPTED", outcome.silently_accepted),
                                         ("DATA-LOST", outcome.data_lost), ("PROCS-LEFT", outcome.processes_left),
                                         ("UNMARKED", outcome.unmarked_dirs)) if on]
                print(f"{'clear' if outcome.clear else ' '.join(flags) or 'unclear':<22} rc={outcome.rc!s:<4} "
                      f"{outcome.seconds:5.1f}s  {case.name}: {outcome.last_line}", flush=True)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    counts = {
        "inputs": len(outcomes),
        "clear error": sum(o.clear for o in outcomes),
        "traceback": sum(o.traceback for o in outcomes),
        "silently accepted": sum(o.silently_accepted for o in outcomes),
        "data lost": sum(bool(o.data_lost) for o in outcomes),
        "processes left": sum(bool(o.processes_left) for o in outcomes),
        "unmarked dirs": sum(bool(o.unmarked_dirs) for o in outcomes),
    }
    print(json.dumps(counts))
    if args.json:
        Path(args.json).write_text(json.dumps({"repo": str(repo), "counts": counts,
                                               "outcomes": [o.__dict__ for o in outcomes]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
