"""One-command simulation: ``python -m fedapp.simulate --nodes N -c "key=value ..."``.

Validates the run config and the data split before anything starts, starts a SuperLink of its own
(on free loopback ports, ``FLWR_HOME`` inside the project unless given), runs ``flwr run`` on
Flower's Ray simulation with N SuperNodes, streams one progress line per round, then checks what
``flwr run`` does not: the run's status in ``flwr ls --format json`` must be
``finished:completed`` and the run directory must hold ``summary.json`` and one finite
``metrics.jsonl`` line per round. It exits non-zero on any failure and prints ``results: <run dir>``
as its last line.

Every check that can be made before training (the ``-c`` syntax, every key, the data split, the
device, the algorithm/dataset pairing, a resumed checkpoint) is made before the run directory is
created or any process started, so a refused command changes nothing. On Ctrl-C, SIGTERM or an
error at any moment it stops every process it started, with everything they started (by process
tree, :mod:`fedapp.processes`), and only then says what it stopped; a run directory it leaves
behind is marked in ``summary.json`` (``"status": "interrupted"`` or ``"failed"``, with the
reason), an empty one it created is removed.

With ``-c "resume=\"<run dir>\" num-server-rounds=<total>"`` it continues a stopped run from its
``checkpoint.npz`` in the same directory (checked before anything starts: a missing, corrupt or
mismatched checkpoint is an error naming the reason or the differing keys).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from fedapp import faults
from fedapp.config import ConfigError, RunConfig
from fedapp.flwr_runs import (
    RUN_STATUS_DONE,
    RunError,
    RunInterrupted,
    RunOutput,
    check_results,
    flower_env,
    flwr_cli,
    format_final,
    free_port,
    one_line,
    run_command,
    run_status,
)
from fedapp.overrides import parse_overrides, resolve_config, to_override_string  # noqa: F401 (re-exported)
from fedapp.processes import ProcessTree, signals_deferred, summarize_stopped
from fedapp.results import PROJECT_ROOT, mark_run

# Tests, benchmarks and sweeps import parse_overrides, to_override_string and free_port from here.
SUPERLINK_START_TIMEOUT = 60.0
LS_TIMEOUT = 60.0


class SimulationError(RunError):
    """The run did not complete, or its results are missing or invalid."""


class RunDirectory:
    """The run directory of one command: created last, marked or removed if the run does not finish."""

    def __init__(self, path: Path, given: str) -> None:
        self.path = path
        self.given = given
        self.created: list[Path] = []  # directories this command created, deepest first

    def create(self) -> None:
        """Create the directory (and missing parents), remembering what to remove if nothing is written."""
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self.remove_created()
            raise ConfigError(f"output-dir={self.given or str(self.path)!r} cannot be created "
                              f"({error.strerror or error}); allowed: a new or empty directory in a writable "
                              "place") from None
        self.created = missing

    def remove_created(self) -> None:
        """Remove the directories :meth:`create` made, deepest first, as long as they are empty."""
        for path in self.created:
            try:
                path.rmdir()  # only if still empty
            except OSError:
                break

    def end(self, status: str, reason: str, task: str | None) -> str:
        """Mark the directory ``status`` (or remove it if this command created it and it is empty)."""
        self.remove_created()
        if not self.path.is_dir():
            return "nothing was written"
        mark_run(self.path, status, reason, task)
        return f"{self.path} is marked {status}"


def simulation_env(flwr_home: Path, http_port: int, control_port: int) -> dict[str, str]:
    """The environment of the SuperLink and ``flwr run``: local API ports, Ray kept quiet and on loopback."""
    return flower_env(
        flwr_home,
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_DEDUP_LOGS="0",
    )


def start_superlink(processes: ProcessTree, env: dict[str, str], http_port: int, control_port: int,
                    log_path: Path) -> subprocess.Popen:
    """An insecure loopback SuperLink in simulation mode, in its own session, tracked by ``processes``."""
    command = [
        "flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1",
        "--port", str(http_port), "--control-api-address", f"127.0.0.1:{control_port}",
        "--disable-runtime-dependency-installation",
    ]
    with log_path.open("ab") as log_file:
        process = processes.popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + SUPERLINK_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SimulationError(f"flower-superlink exited with code {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    raise SimulationError(f"flower-superlink did not answer within {SUPERLINK_START_TIMEOUT:.0f} s; see {log_path}")


def run_flower(processes: ProcessTree, env: dict[str, str], nodes: int, resources: str, overrides: dict[str, Any],
               log_path: Path, timeout: float) -> tuple[int, int | None]:
    """``flwr run --stream``; echoes progress lines, logs everything; returns (exit code, run id)."""
    command = [
        "flwr", "run", str(PROJECT_ROOT), "--stream",
        "--federation-config", f"num-supernodes={nodes} {resources}",
        "--run-config", to_override_string(overrides),
    ]
    process = processes.popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    output = RunOutput(log_path)
    with process:
        code = output.follow(process, timeout, _echo)
    return code, output.run_id


def _echo(line: str) -> None:
    """Round lines from "[round " on, errors whole; the rest stays in the log."""
    if "[round " in line:
        print(line[line.index("[round "):].rstrip(), flush=True)
    elif "ERROR" in line or "Traceback" in line or "Exception" in line:
        print(line.rstrip(), flush=True)


def simulate(args: argparse.Namespace) -> Path:
    """Check, run and verify one simulation; the run directory (see the module docstring)."""
    extra = ["tensorboard=false"] if getattr(args, "no_tensorboard", False) else []
    config, overrides = resolve_config((args.run_config or []) + extra, args.nodes)
    run = RunDirectory(Path(config.output_dir), config.output_dir if not config.resume else config.resume)
    processes = ProcessTree()
    task = _task_of(config)
    try:
        run.create()
        if args.engine == "inprocess":
            summary = _simulate_inprocess(config, overrides, args.nodes)
        else:
            summary = _simulate_flower(args, config, overrides, processes)
    except KeyboardInterrupt as interrupt:
        with signals_deferred():
            stopped = processes.stop()
            where = run.end("interrupted", f"interrupted ({interrupt or 'SIGINT'})", task)
        what = f"stopped {summarize_stopped(stopped)}" if stopped else "no process of the run was running"
        raise RunInterrupted(f"{what}; {where}" + (f"; continue with -c 'resume=\"{run.path}\" ...'"
                                                   if (run.path / "checkpoint.npz").is_file() else "")) from None
    except BaseException as error:
        with signals_deferred():
            processes.stop()
            run.end("failed", one_line(error), task)
        raise
    finally:
        with signals_deferred():
            processes.stop()  # a no-op when nothing is left
    print(f"[simulate] final: {format_final(summary)}", flush=True)
    return run.path


def _simulate_inprocess(config: RunConfig, overrides: dict[str, Any], nodes: int) -> dict[str, Any]:
    # Imported only for this engine: Flower's server loop and the strategies cost seconds to import.
    from fedapp.inprocess import run_inprocess

    print(f"[simulate] {config.algorithm} on {config.dataset}, {nodes} in-process nodes, "
          f"{config.num_server_rounds} rounds", flush=True)
    run_inprocess(overrides, nodes)
    return check_results(Path(config.output_dir), config.num_server_rounds)


def _simulate_flower(args: argparse.Namespace, config: RunConfig, overrides: dict[str, Any],
                     processes: ProcessTree) -> dict[str, Any]:
    run_dir = Path(config.output_dir)
    flwr_home = Path(args.flwr_home or PROJECT_ROOT / ".flwr").resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    http_port, control_port = free_port(), free_port()
    env = processes.env(simulation_env(flwr_home, http_port, control_port))
    log_path = run_dir / "simulation.log"
    print(f"[simulate] {config.algorithm} on {config.dataset}, {args.nodes} nodes, "
          f"{config.num_server_rounds} rounds; log: {log_path}", flush=True)
    start_superlink(processes, env, http_port, control_port, run_dir / "superlink.log")
    resources = (f"client-resources-num-cpus={_number(args.cpus_per_client)} "
                 f"client-resources-num-gpus={_number(args.gpus_per_client)}")
    code, run_id = run_flower(processes, env, args.nodes, resources, overrides, log_path, args.timeout)
    if code != 0:
        raise SimulationError(f"flwr run exited with code {code}; see {log_path}")
    status = run_status(lambda ls_args: flwr_cli(["ls", *ls_args], env, LS_TIMEOUT).stdout, run_id)
    if status != RUN_STATUS_DONE:
        raise SimulationError(f"the run ended with status {status!r}; {_failure_hint(run_dir, log_path)}")
    return check_results(run_dir, config.num_server_rounds)


def _failure_hint(run_dir: Path, log_path: Path) -> str:
    """The ServerApp's own verdict if it wrote one (e.g. every client failed), else the log to read."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") == "failed" and summary.get("reason"):
        return f"{summary['reason']}; see {log_path}"
    return f"see {log_path}"


def _task_of(config: RunConfig) -> str | None:
    # Imported here so that importing this module does not load torch (sweeps and tests import it
    # for to_override_string); resolve_config has loaded it by the time this runs.
    from fedapp.data import hold_out

    try:
        return hold_out(config).bundle.task  # cached: resolve_config loaded it
    except Exception:
        return None


def _number(value: float) -> int | float:
    """Flower wants integral resources as TOML integers."""
    return int(value) if float(value).is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedapp.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10, help="number of simulated SuperNodes (default 10)")
    parser.add_argument("-c", "--run-config", action="append",
                        help='run-config overrides, e.g. -c "dataset=\\"lt-digits\\" num-server-rounds=5"')
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per client (default 1)")
    parser.add_argument("--gpus-per-client", type=float, default=0.0, help="Ray GPUs per client (default 0)")
    parser.add_argument("--flwr-home", default="", help="FLWR_HOME to use (default <project>/.flwr)")
    parser.add_argument("--engine", choices=("flower", "inprocess"), default="flower",
                        help="flower: flwr run on Ray (default); inprocess: Flower's server loop with "
                             "the same strategy and clients in this process (for sweeps)")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    parser.add_argument("--no-tensorboard", action="store_true",
                        help="write no TensorBoard event files (the same as -c tensorboard=false)")
    parser.add_argument("--fault-injection", default="", metavar="SPEC",
                        help='TESTING AID: make clients fail on purpose, e.g. "raise:3:1,nan:5:*" (sets '
                             f"{faults.ENV_VAR} for the processes this command starts; see fedapp/faults.py)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the exit code (0 done, 1 failed, 2 refused, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.nodes < 1:
        print(f"error: --nodes={args.nodes} is not allowed; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print(f"error: --timeout={args.timeout} is not allowed; allowed: a number of seconds > 0", file=sys.stderr)
        return 2
    if args.fault_injection:
        try:
            faults.parse_faults(args.fault_injection)
        except ValueError as error:
            print(f"error: --fault-injection={args.fault_injection!r} is not allowed: {error}", file=sys.stderr)
            return 2
        os.environ[faults.ENV_VAR] = args.fault_injection  # inherited by the SuperLink and the ClientApps
    return run_command(lambda: simulate(args), nothing_running="nothing had started yet")


if __name__ == "__main__":
    sys.exit(main())
