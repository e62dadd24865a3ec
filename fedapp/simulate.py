"""One-command simulation: ``python -m fedapp.simulate --nodes N -c "key=value ..."``.

Validates the run config and the data split before anything starts, starts a SuperLink of its own
(on free loopback ports, ``FLWR_HOME`` inside the project unless given), runs ``flwr run`` on
Flower's Ray simulation with N SuperNodes, streams one progress line per round, then checks what
``flwr run`` does not: the run's status in ``flwr ls --format json`` must be
``finished:completed`` and the run directory must hold ``summary.json`` and one finite
``metrics.jsonl`` line per round. It stops what it started (also on Ctrl-C), exits non-zero on
any failure, and prints ``results: <run dir>`` as its last line.

With ``-c "resume=\"<run dir>\" num-server-rounds=<total>"`` it continues a stopped run from its
``checkpoint.npz`` in the same directory (checked before anything starts: a missing, corrupt or
mismatched checkpoint is an error naming the reason or the differing keys).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from flwr.common.config import parse_config_args

from fedapp.config import ConfigError, RunConfig
from fedapp.results import PROJECT_ROOT, resolve_run_dir

SUPERLINK_START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class SimulationError(RuntimeError):
    """The run did not complete, or its results are missing or invalid."""


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
    """The validated config and the overrides to pass to ``flwr run`` (with an absolute output-dir)."""
    overrides = parse_config_args(list(run_config)) if run_config else {}
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
        from fedapp.checkpoint import open_for_resume

        open_for_resume(run_dir, dict(config.to_kebab(), **{"output-dir": str(run_dir)}))
        overrides["resume"] = str(run_dir)
    else:
        run_dir = resolve_run_dir(config.output_dir, config.algorithm, config.dataset)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"output-dir={str(run_dir)!r} exists and is not empty; choose a new directory")
    overrides["output-dir"] = str(run_dir)
    # Fails now, with a clear message, if the data cannot be split over this many clients.
    from fedapp.data import federate

    federate(config, nodes)
    return config.replace(output_dir=str(run_dir)), overrides


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


def start_superlink(env: dict[str, str], http_port: int, control_port: int, log_path: Path) -> subprocess.Popen:
    """An insecure loopback SuperLink in simulation mode, in its own process group."""
    command = [
        "flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1",
        "--port", str(http_port), "--control-api-address", f"127.0.0.1:{control_port}",
        "--disable-runtime-dependency-installation",
    ]
    log_file = log_path.open("ab")
    process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
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
    stop_process(process)
    raise SimulationError(f"flower-superlink did not answer within {SUPERLINK_START_TIMEOUT:.0f} s; see {log_path}")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited in time."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_flower(env: dict[str, str], nodes: int, resources: str, overrides: dict[str, Any], log_path: Path,
               timeout: float) -> tuple[int, int | None]:
    """``flwr run --stream``; echoes progress lines, logs everything; returns (exit code, run id)."""
    command = [
        "flwr", "run", str(PROJECT_ROOT), "--stream",
        "--federation-config", f"num-supernodes={nodes} {resources}",
        "--run-config", to_override_string(overrides),
    ]
    run_id = None
    deadline = time.monotonic() + timeout
    with log_path.open("a") as log_file, subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    ) as process:
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
                stop_process(process)
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
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if [row["round"] for row in lines] != list(range(1, rounds + 1)):
        raise SimulationError(f"metrics.jsonl has rounds {[r['round'] for r in lines]}, expected 1..{rounds}")
    summary = json.loads(summary_path.read_text())
    final = summary.get("final", {})
    main = summary.get("main_metric")
    if main not in final or not isinstance(final[main], (int, float)) or not math.isfinite(final[main]):
        raise SimulationError(f"final {main} is missing or not finite in {summary_path}")
    return summary


def simulate(args: argparse.Namespace) -> Path:
    extra = ["tensorboard=false"] if getattr(args, "no_tensorboard", False) else []
    config, overrides = resolve_config((args.run_config or []) + extra, args.nodes)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.engine == "inprocess":
        from fedapp.inprocess import run_inprocess

        print(f"[simulate] {config.algorithm} on {config.dataset}, {args.nodes} in-process nodes, "
              f"{config.num_server_rounds} rounds", flush=True)
        run_inprocess(overrides, args.nodes)
        summary = check_results(run_dir, config.num_server_rounds)
        _print_final(summary)
        return run_dir
    flwr_home = Path(args.flwr_home or PROJECT_ROOT / ".flwr").resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    http_port, control_port = free_port(), free_port()
    env = flower_env(flwr_home, http_port, control_port)
    log_path = run_dir / "simulation.log"
    print(f"[simulate] {config.algorithm} on {config.dataset}, {args.nodes} nodes, "
          f"{config.num_server_rounds} rounds; log: {log_path}", flush=True)
    superlink = start_superlink(env, http_port, control_port, run_dir / "superlink.log")
    try:
        resources = (f"client-resources-num-cpus={_number(args.cpus_per_client)} "
                     f"client-resources-num-gpus={_number(args.gpus_per_client)}")
        code, run_id = run_flower(env, args.nodes, resources, overrides, log_path, args.timeout)
        if code != 0:
            raise SimulationError(f"flwr run exited with code {code}; see {log_path}")
        status = run_status(env, run_id)
        if status != "finished:completed":
            raise SimulationError(f"the run ended with status {status!r}; see {log_path}")
        summary = check_results(run_dir, config.num_server_rounds)
    finally:
        stop_process(superlink)
    _print_final(summary)
    return run_dir


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
        print("error: --nodes must be >= 1", file=sys.stderr)
        return 2
    try:
        run_dir = simulate(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SimulationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped the SuperLink and its runs", file=sys.stderr)
        return 130
    print(f"results: {run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
