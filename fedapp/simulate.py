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
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import click
from flwr.common.config import parse_config_args

from fedapp.config import ConfigError, RunConfig
from fedapp.processes import ProcessTree, signals_deferred, signals_raise_interrupt, summarize_stopped
from fedapp.results import PROJECT_ROOT, RunFailedError, mark_run, read_rows, resolve_run_dir

SUPERLINK_START_TIMEOUT = 60.0


class SimulationError(RuntimeError):
    """The run did not complete, or its results are missing or invalid."""


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM: what was started is stopped; the message says what and where the run is."""


# Flower's own pattern for one ``key=value`` item of ``-c`` (flwr.common.config.parse_config_args).
_ITEM = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """The ``-c`` items as Flower parses them, but each mistake is refused with the item named.

    Flower refuses an unquoted string value (``algorithm=fedprox``) with a generic message and
    silently drops text that is no ``key=value`` pair (``seed``, ``seed=``); here both are a
    :class:`ConfigError` naming the item and, for a bare word, the quoted form to use. A single
    item ending in ``.toml`` is a TOML file of overrides, as with ``flwr run -c``.
    """
    items = [item for item in items if item]
    if len(items) == 1 and items[0].endswith(".toml"):
        path = Path(items[0]).expanduser()
        try:
            return parse_config_args(items)
        except FileNotFoundError:
            raise ConfigError(f"-c {items[0]!r}: no such file; allowed: a TOML file of run-config keys, "
                              'or key=value items like -c \'seed=1 algorithm="fedavg"\'') from None
        except (OSError, ValueError) as error:
            raise ConfigError(f"-c {items[0]!r}: {path} is not a readable TOML file ({error})") from None
    for item in items:
        if item.endswith(".toml"):
            raise ConfigError(f"-c {item!r}: a .toml file must be the only -c item")
        leftover = _ITEM.sub(" ", item).strip()
        if leftover:
            raise ConfigError(f"-c {item!r}: {leftover.split()[0]!r} is not a key=value item; allowed: "
                              'space-separated key=value items, strings in double quotes, e.g. '
                              '-c \'seed=1 algorithm="fedavg"\'')
        keys = [key for key, _ in _ITEM.findall(item)]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ConfigError(f"-c {item!r}: {', '.join(twice)} given more than once; allowed: each key once")
        for key, value in _ITEM.findall(item):
            try:
                tomllib.loads(f"{key} = {value}")
            except tomllib.TOMLDecodeError:
                quoted = json.dumps(value.strip("'\""))
                raise ConfigError(
                    f"{key}={value} is not allowed: {value!r} is not a number, true/false or a quoted "
                    f"string; a string value must be quoted: -c '{key}={quoted}'"
                ) from None
    try:
        return parse_config_args(items)
    except click.ClickException as error:  # what the checks above did not catch, in Flower's words
        raise ConfigError(f"-c {' '.join(items)!r}: {error.format_message()}") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def to_override_string(values: dict[str, Any]) -> str:
    """``key=value`` pairs in the TOML syntax ``flwr run -c`` parses."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, str):
            parts.append(f"{key}={json.dumps(value)}")
        else:
            parts.append(f"{key}={value!r}")
    return " ".join(parts)


def resolve_config(run_config: Sequence[str], nodes: int) -> tuple[RunConfig, dict[str, Any]]:
    """The validated config and the overrides to pass to ``flwr run`` (with an absolute output-dir).

    Refuses (``ConfigError``/``ValueError``) before anything is written: the keys and values, the
    data split over ``nodes``, and what the ServerApp would refuse before round 1
    (:func:`fedapp.server_app.preflight`: device, algorithm/dataset pairing, the checkpoint to resume).
    """
    overrides = parse_overrides(list(run_config)) if run_config else {}
    defaults = RunConfig.default_values()
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}; allowed keys: {sorted(defaults)}")
    config = RunConfig.from_run_config({**defaults, **overrides})
    if config.min_available_clients > nodes:
        raise ConfigError(f"min-available-clients={config.min_available_clients} is not allowed with --nodes "
                          f"{nodes}; allowed: <= {nodes} (the run would wait for clients that never come)")
    if config.resume:
        # Continue that run in its own directory; refuse now (before any process starts) if the
        # checkpoint is missing, corrupt or from another config.
        run_dir = resolve_run_dir(config.resume, config.algorithm, config.dataset)
        if config.output_dir and resolve_run_dir(config.output_dir, config.algorithm, config.dataset) != run_dir:
            raise ConfigError(f"output-dir={config.output_dir!r} is not allowed with resume={config.resume!r}: a "
                              "resumed run continues in its own directory; drop output-dir")
        if not run_dir.is_dir():
            raise ConfigError(f"resume={config.resume!r}: {run_dir} is not a directory; allowed: the run "
                              "directory of an earlier run (with its checkpoint.npz)")
        overrides["resume"] = str(run_dir)
    else:
        run_dir = resolve_run_dir(config.output_dir, config.algorithm, config.dataset)
        check_new_run_dir(run_dir, config.output_dir)
    overrides["output-dir"] = str(run_dir)
    config = config.replace(output_dir=str(run_dir))
    # Fails now, with a clear message, if the data cannot be split over this many clients.
    from fedapp.data import federate
    from fedapp.server_app import preflight

    federate(config, nodes)
    preflight(config)
    return config, overrides


def check_new_run_dir(run_dir: Path, given: str) -> None:
    """Refuse a run directory that is a file, lies under a file, or holds files already."""
    key = f"output-dir={given or str(run_dir)!r}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{key} is a file, not a directory; allowed: a new or empty directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"{key} exists and is not empty; allowed: a new or empty directory")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key} lies under {parent}, which is a file; allowed: a new or empty directory")
            break


class RunDirectory:
    """The run directory of one command: created last, marked or removed if the run does not finish."""

    def __init__(self, path: Path, given: str) -> None:
        self.path = path
        self.given = given
        self.created: list[Path] = []  # directories this command created, deepest first

    def create(self) -> None:
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


def flower_env(flwr_home: Path, http_port: int, control_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FEDAPP_HOME=str(PROJECT_ROOT),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_DEDUP_LOGS="0",
    )
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


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
    run_id = None
    deadline = time.monotonic() + timeout
    process = processes.popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    with log_path.open("a") as log_file, process:
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            if run_id is None and "Successfully started run" in line:
                run_id = _parse_run_id(line)
            if "[round " in line:
                print(line[line.index("[round "):].rstrip(), flush=True)
            elif "ERROR" in line or "Traceback" in line or "Exception" in line:
                print(line.rstrip(), flush=True)
            if time.monotonic() > deadline:
                raise SimulationError(f"flwr run exceeded --timeout={timeout:.0f} s")
        return process.wait(), run_id


def _parse_run_id(line: str) -> int | None:
    digits = "".join(ch if ch.isdigit() else " " for ch in line).split()
    return int(digits[-1]) if digits else None


def run_status(env: dict[str, str], run_id: int | None) -> str:
    """The status of ``run_id`` (or of the newest run) as ``flwr ls --format json`` reports it."""
    command = ["flwr", "ls", "--format", "json"] + (["--run-id", str(run_id)] if run_id is not None else [])
    output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60).stdout
    listing = json.loads(output[output.index("{"):])
    runs = listing.get("runs", [])
    if not runs:
        raise SimulationError(f"flwr ls lists no run: {listing.get('error-message', output)[:500]}")
    chosen = [r for r in runs if run_id is not None and int(r.get("run-id", -1)) == run_id]
    run = chosen[0] if chosen else max(runs, key=lambda r: int(r.get("run-id", 0)))
    return str(run.get("status", "unknown"))


def check_results(run_dir: Path, rounds: int) -> dict[str, Any]:
    """The summary, after checking ``metrics.jsonl`` has every round and the final metrics are finite."""
    metrics_path, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    if not summary_path.is_file() or not metrics_path.is_file():
        raise SimulationError(f"the ServerApp wrote no summary.json/metrics.jsonl in {run_dir}")
    try:
        lines = read_rows(metrics_path)
        summary = json.loads(summary_path.read_text())
    except ValueError as error:
        raise SimulationError(f"unreadable results in {run_dir}: {error}") from None
    if summary.get("status", "completed") != "completed":
        raise SimulationError(f"the run is marked {summary['status']!r} in {summary_path}: {summary.get('reason')}")
    if [row.get("round") for row in lines] != list(range(1, rounds + 1)):
        raise SimulationError(f"metrics.jsonl has rounds {[r.get('round') for r in lines]}, expected 1..{rounds}")
    final = summary.get("final", {})
    main = summary.get("main_metric")
    if main not in final or not isinstance(final[main], (int, float)) or not math.isfinite(final[main]):
        raise SimulationError(f"final {main} is missing or not finite in {summary_path}")
    return summary


def simulate(args: argparse.Namespace) -> Path:
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
            run.end("failed", _reason(error), task)
        raise
    finally:
        with signals_deferred():
            processes.stop()  # a no-op when nothing is left
    _print_final(summary)
    return run.path


def _simulate_inprocess(config: RunConfig, overrides: dict[str, Any], nodes: int) -> dict[str, Any]:
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
    env = processes.env(flower_env(flwr_home, http_port, control_port))
    log_path = run_dir / "simulation.log"
    print(f"[simulate] {config.algorithm} on {config.dataset}, {args.nodes} nodes, "
          f"{config.num_server_rounds} rounds; log: {log_path}", flush=True)
    start_superlink(processes, env, http_port, control_port, run_dir / "superlink.log")
    resources = (f"client-resources-num-cpus={_number(args.cpus_per_client)} "
                 f"client-resources-num-gpus={_number(args.gpus_per_client)}")
    code, run_id = run_flower(processes, env, args.nodes, resources, overrides, log_path, args.timeout)
    if code != 0:
        raise SimulationError(f"flwr run exited with code {code}; see {log_path}")
    status = run_status(env, run_id)
    if status != "finished:completed":
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
    from fedapp.data import hold_out

    try:
        return hold_out(config).bundle.task  # cached: resolve_config loaded it
    except Exception:
        return None


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:1000]


def _print_final(summary: dict[str, Any]) -> None:
    final = ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items() if isinstance(v, (int, float)))
    print(f"[simulate] final: {final}", flush=True)


def _number(value: float) -> int | float:
    """Flower wants integral resources as TOML integers."""
    return int(value) if float(value).is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedapp.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10, help="number of simulated SuperNodes (default 10)")
    parser.add_argument("-c", "--run-config", action="append",
                        help='run-config overrides, e.g. -c "algorithm=\\"fedavg\\" num-server-rounds=5"')
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per client (default 1)")
    parser.add_argument("--gpus-per-client", type=float, default=0.0, help="Ray GPUs per client (default 0)")
    parser.add_argument("--flwr-home", default="", help="FLWR_HOME to use (default <project>/.flwr)")
    parser.add_argument("--engine", choices=("flower", "inprocess"), default="flower",
                        help="flower: flwr run on Ray (default); inprocess: Flower's server loop with "
                             "the same strategy and clients in this process (for sweeps)")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    parser.add_argument("--no-tensorboard", action="store_true",
                        help="write no TensorBoard event files (the same as -c tensorboard=false)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 1:
        print(f"error: --nodes={args.nodes} is not allowed; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print(f"error: --timeout={args.timeout} is not allowed; allowed: a number of seconds > 0", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM must reach the cleanup, also where the launching shell set SIGINT to
    # "ignore" (background jobs); signal handlers can only be set from the main thread.
    guard = signals_raise_interrupt() if threading.current_thread() is threading.main_thread() else _no_guard()
    with guard:
        try:
            run_dir = simulate(args)
        except (ConfigError, ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (SimulationError, RunFailedError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except RunInterrupted as interrupted:
            print(f"interrupted: {interrupted}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("interrupted: nothing had started yet", file=sys.stderr)
            return 130
        except Exception as error:  # a failure inside the run (a strategy, a client, Flower): named, not a traceback
            print(f"error: the run failed: {type(error).__name__}: {_reason(error)}", file=sys.stderr)
            return 1
    print(f"results: {run_dir}", flush=True)
    return 0


class _no_guard:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
