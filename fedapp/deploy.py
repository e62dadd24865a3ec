"""Loopback deployment: a real SuperLink and N real SuperNodes as separate processes, then ``flwr run``.

    python scripts/deploy_local.py --nodes 2 -c "num-server-rounds=2 local-epochs=1"
    python scripts/deploy_local.py --nodes 2 --insecure          # explicit opt-out of TLS + auth

The same path as a deployment on separate machines (docs/DEPLOYMENT.md), on 127.0.0.1:

1. certificates and SuperNode keys from ``docker/make_certs.sh`` (unless ``--insecure``),
2. ``flower-superlink`` on one free port (Fleet, Control and Runtime APIs share it in flwr 1.41)
   with TLS and ``--enable-supernode-auth``, runtime dependency installation disabled and
   ``--isolation process``: it launches nothing itself. A separately started ``flower-superexec``
   (its own working directory and ``FLWR_HOME``, no private key, no state database) connects to
   the SuperLink's Runtime API and starts the ServerApp of each run,
3. the CLI connection ``[superlink.<name>]`` in an isolated ``FLWR_HOME/config.toml`` and
   ``flwr supernode register`` of each SuperNode public key,
4. N ``flower-supernode`` processes, each with its own ``FLWR_HOME``, Runtime API port, private
   key, ``--isolation process`` and ``--node-config 'partition-id=i num-partitions=N device="cpu"'``,
   each with its own ``flower-superexec`` that starts the ClientApp processes (it never sees
   the SuperNode's private key); SuperExec requests carry an HMAC with a per-host shared secret
   (``--superexec-auth-secret-file``), so no other local process can act as a SuperExec,
5. ``flwr run <project> <name> --stream``, then the checks ``flwr run`` does not do: the run's
   status in ``flwr ls --format json`` is ``finished:completed`` and the run directory holds
   ``summary.json`` and one finite ``metrics.jsonl`` line per round.

``isolation="subprocess"`` keeps Flower's default instead: the SuperLink and SuperNodes start
their SuperExec as children, and submitted code runs next to their keys (docs/DEPLOYMENT.md,
"Trust model").

Every process it starts runs in its own process group and is stopped by PID (with the
descendants it spawned: SuperExec, ServerApp, ClientApps) on exit, on error and on Ctrl-C/SIGTERM.
Every wait is bounded. The exit code is non-zero on any failure; the last line printed is
``results: <run dir>``. The tests in ``tests/test_deployment.py`` drive the same
:class:`LocalDeployment` class.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fedapp import processes
from fedapp.config import ConfigError
from fedapp.results import PROJECT_ROOT
from fedapp.simulate import (
    SimulationError,
    check_results,
    free_port,
    resolve_config,
    to_override_string,
)

MAKE_CERTS = PROJECT_ROOT / "docker" / "make_certs.sh"
DEFAULT_CONNECTION = "local-deployment"
STARTUP_TIMEOUT = 120.0  # SuperLink up and answering the CLI; SuperNodes online (a loaded CI box)
CLI_TIMEOUT = 90.0  # one `flwr ...` CLI call (it imports flwr: several seconds when loaded)
RUN_STATUS_DONE = "finished:completed"
ISOLATION_MODES = ("process", "subprocess")


class DeploymentError(RuntimeError):
    """A process did not start, a run did not complete, or its results are missing."""


@dataclass
class ManagedProcess:
    """A process this harness started: its own process group, its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def wait(self, timeout: float) -> int:
        """The exit code; raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        return self.popen.wait(timeout=timeout)


@dataclass
class RunOutcome:
    """A finished and checked ``flwr run``."""

    run_id: int | None
    status: str
    run_dir: Path
    summary: dict[str, Any]
    seconds: float
    log_path: Path
    lines: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# Process bookkeeping (Linux /proc): the SuperLink starts its SuperExec in a new session, so a
# process-group kill alone would miss it and the ServerApp below it.


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every living descendant of ``pid`` (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[1]
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append((child, starts[child]))
            todo.append(child)
    return found


def _kill_if_same(pid: int, start: int, sig: signal.Signals) -> bool:
    """Signal ``pid`` only if it is still the process that started at ``start`` (no PID reuse)."""
    stat = _proc_stat(pid)
    if stat is None or stat[1] != start:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_tree(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``process`` and every descendant it spawned, by PID (:func:`fedapp.processes.stop_tree`)."""
    processes.stop_tree(process, grace)


def stop_trees(processes: Sequence[subprocess.Popen], grace: float = 15.0) -> None:
    """:func:`stop_tree` for many processes at once: SIGTERM to every group and descendant first,
    then one shared ``grace`` period, then SIGKILL to what is left (20 SuperNodes stop in
    seconds, not one grace period after the other)."""
    trees = [(process, descendants(process.pid)) for process in processes]
    for process, tree in trees:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid, start in tree:
            _kill_if_same(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(
            process.poll() is None or any(_alive_not_zombie(pid, start) for pid, start in tree)
            for process, tree in trees):
        time.sleep(0.2)
    for process, tree in trees:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid, start in tree:
            if _alive_not_zombie(pid, start):
                _kill_if_same(pid, start, signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _alive_not_zombie(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    if stat is None or stat[1] != start:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------------------------------
# Certificates


def make_certs(out: Path, nodes: int, hosts: Sequence[str] = ()) -> Path:
    """CA, SuperLink certificate and ``nodes`` SuperNode key pairs via ``docker/make_certs.sh``."""
    command = ["bash", str(MAKE_CERTS), "--out", str(out), "--nodes", str(nodes)]
    for host in hosts:
        command += ["--host", host]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise DeploymentError(f"docker/make_certs.sh failed ({result.returncode}): {result.stderr.strip()}")
    return out


# ------------------------------------------------------------------------------------------
# The deployment


class LocalDeployment:
    """A SuperLink, SuperNodes and the ``flwr`` CLI on loopback; a context manager that stops all.

    Secure unless ``insecure=True``: TLS with ``certs/ca.crt`` + ``certs/server.pem`` and
    SuperNode authentication with the keys ``certs/keys/supernode-<i>`` (``make_certs``).
    """

    def __init__(self, workdir: Path, *, insecure: bool = False, certs: Path | None = None,
                 connection: str = DEFAULT_CONNECTION, project: Path = PROJECT_ROOT,
                 isolation: str = "process") -> None:
        if not insecure and certs is None:
            raise ValueError("a secure deployment needs certs= (docker/make_certs.sh output); "
                             "insecure=True is the explicit opt-out")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", connection):
            raise ValueError(f"connection={connection!r} is not allowed; use letters, digits, '-' or '_'")
        if isolation not in ISOLATION_MODES:
            raise ValueError(f"isolation={isolation!r} is not allowed; use one of {ISOLATION_MODES}")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.insecure = insecure
        self.certs = Path(certs).resolve() if certs is not None else None
        self.connection = connection
        self.project = Path(project).resolve()
        self.isolation = isolation
        self.processes: list[ManagedProcess] = []
        # SuperNode name -> the SuperExec started for it (isolation="process")
        self.superexecs: dict[str, ManagedProcess] = {}
        self.superlink: ManagedProcess | None = None
        self.port: int | None = None
        self.cli_home = self.workdir / "cli"
        self.cli_home.mkdir(exist_ok=True)
        if self.certs is not None and not insecure:
            for name in ("ca.crt", "server.pem", "server.key"):
                if not (self.certs / name).is_file():
                    raise ValueError(f"certs={str(self.certs)!r} lacks {name}; run docker/make_certs.sh --out <dir>")

    # -- context management --------------------------------------------------------------
    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process this deployment started, all at once (one shared grace period)."""
        stop_trees([proc.popen for proc in reversed(self.processes)])

    # -- environment -----------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self.port is None:
            raise DeploymentError("the SuperLink is not started")
        return f"127.0.0.1:{self.port}"

    def env(self, flwr_home: Path) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_ADDRESS",):  # a deployment never uses Ray
            env.pop(key, None)
        env.update(
            FLWR_HOME=str(flwr_home),
            # Relative output-dir values of the ServerApp resolve against this (fedapp.results).
            FEDAPP_HOME=str(self.project),
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            PYTHONUNBUFFERED="1",
        )
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        return env

    def _spawn(self, name: str, argv: list[str], flwr_home: Path) -> ManagedProcess:
        flwr_home.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(argv, env=self.env(flwr_home), stdout=log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=flwr_home)
        proc = ManagedProcess(name, popen, log_path, argv)
        self.processes.append(proc)
        return proc

    # -- SuperLink -------------------------------------------------------------------------
    def start_superlink(self, timeout: float = STARTUP_TIMEOUT) -> ManagedProcess:
        """``flower-superlink`` on a free loopback port; returns once the CLI gets an answer."""
        self.port = free_port()
        argv = ["flower-superlink", "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.insecure:
            argv.append("--insecure")
        else:
            assert self.certs is not None
            argv += ["--ssl-ca-certfile", str(self.certs / "ca.crt"),
                     "--ssl-certfile", str(self.certs / "server.pem"),
                     "--ssl-keyfile", str(self.certs / "server.key"),
                     "--enable-supernode-auth"]
        if self.isolation == "process":
            argv += ["--isolation", "process",
                     "--superexec-auth-secret-file", str(self.superexec_secret("superlink"))]
        self.superlink = self._spawn("superlink", argv, self.workdir / "superlink")
        if self.isolation == "process":
            self.superexecs["superlink"] = self.start_superexec("superlink", self.address, tls=not self.insecure)
        self.write_connection()
        deadline = time.monotonic() + timeout
        while True:
            if not self.superlink.alive():
                raise DeploymentError(f"flower-superlink exited with code {self.superlink.popen.returncode}; "
                                      f"see {self.superlink.log_path}")
            if _port_open(self.port):
                try:
                    answer = self.flwr("ls", self.connection, "--format", "json", check=False)
                except DeploymentError:  # the CLI itself timed out on a loaded machine: try again
                    answer = None
                if answer is not None and answer.returncode == 0 and _json_of(answer.stdout).get("success"):
                    return self.superlink
            if time.monotonic() > deadline:
                raise DeploymentError(f"the SuperLink at {self.address} did not answer within {timeout:.0f} s; "
                                      f"see {self.superlink.log_path}")
            time.sleep(1.0)

    def superexec_secret(self, host: str) -> Path:
        """A random shared secret (mode 0600) for ``host``'s SuperExec HMAC authentication."""
        path = self.workdir / "secrets" / f"{host}.secret"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(32).hex().encode())
        return path

    def start_superexec(self, host: str, runtime_address: str, *, tls: bool) -> ManagedProcess:
        """``flower-superexec`` for ``host``: its own ``FLWR_HOME`` (the apps it unpacks), no keys.

        ``tls`` verifies the Runtime API with ``ca.crt`` (the SuperLink's port); a SuperNode's
        Runtime API listens on 127.0.0.1 without TLS, like Flower's own compose files.
        """
        argv = ["flower-superexec", "--runtime-api-address", runtime_address,
                "--superexec-auth-secret-file", str(self.superexec_secret(host))]
        if tls:
            assert self.certs is not None
            argv += ["--root-certificates", str(self.certs / "ca.crt")]
        else:
            argv.append("--insecure")
        name = f"superexec-{host}"
        return self._spawn(name, argv, self.workdir / name)

    def write_connection(self) -> Path:
        """``[superlink.<connection>]`` in the CLI's own ``FLWR_HOME/config.toml`` (the default one)."""
        lines = ["[superlink]", f'default = "{self.connection}"', "", f"[superlink.{self.connection}]",
                 f'address = "{self.address}"']
        if self.insecure:
            lines.append("insecure = true")
        else:
            assert self.certs is not None
            lines.append(f"root-certificates = {json.dumps(str(self.certs / 'ca.crt'))}")
        path = self.cli_home / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- CLI -------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        """One ``flwr`` CLI call with this deployment's connection (bounded in time)."""
        try:
            result = subprocess.run(["flwr", *args], env=self.env(self.cli_home), capture_output=True, text=True,
                                    timeout=timeout, cwd=self.cli_home)
        except subprocess.TimeoutExpired as error:
            raise DeploymentError(f"`flwr {' '.join(args)}` did not return within {timeout:.0f} s") from error
        if check and result.returncode != 0:
            raise DeploymentError(f"`flwr {' '.join(args)}` failed ({result.returncode}): "
                                  f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def register(self, public_key: Path, name: str | None = None) -> None:
        """``flwr supernode register <public key> <connection>`` (SuperNode authentication)."""
        args = ["supernode", "register", str(public_key), self.connection, "--format", "json"]
        if name:
            args += ["--name", name]
        answer = _json_of(self.flwr(*args).stdout)
        if not answer.get("success", False):
            raise DeploymentError(f"registering {public_key} failed: {answer}")

    def nodes(self) -> list[dict[str, Any]]:
        """``flwr supernode list --format json``: the SuperLink's view of its SuperNodes."""
        answer = _json_of(self.flwr("supernode", "list", self.connection, "--format", "json").stdout)
        return list(answer.get("nodes", []))

    def wait_online(self, count: int, timeout: float = STARTUP_TIMEOUT) -> list[dict[str, Any]]:
        """Wait until ``count`` SuperNodes are online; raises with their logs if they are not."""
        deadline = time.monotonic() + timeout
        online: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                online = [n for n in self.nodes() if n.get("status") == "online"]
            except DeploymentError:  # one CLI call timed out on a loaded machine
                continue
            if len(online) >= count:
                return online
            time.sleep(2.0)
        logs = "\n".join(f"--- {p.name} ---\n{p.log()[-1500:]}" for p in self.processes if p.name.startswith("supernode"))
        raise DeploymentError(f"{len(online)} of {count} SuperNodes online after {timeout:.0f} s\n{logs}")

    # -- SuperNodes ------------------------------------------------------------------------
    def key_path(self, index: int) -> Path:
        assert self.certs is not None
        return self.certs / "keys" / f"supernode-{index}"

    def start_supernode(self, partition_id: int, num_partitions: int, *, device: str = "cpu",
                        key_index: int | None = None, with_ca: bool = True, max_retries: int | None = None,
                        name: str | None = None, extra_node_config: str = "") -> ManagedProcess:
        """``flower-supernode`` for one partition, with its own ``FLWR_HOME`` and Runtime API port.

        Secure mode: TLS with the CA (``with_ca=False`` leaves it out, to show the handshake fails)
        and the private key ``keys/supernode-<key_index>`` (default: the partition id).
        """
        name = name or f"supernode-{partition_id}"
        node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
        if device:
            node_config += f" device={json.dumps(device)}"
        if extra_node_config:
            node_config += f" {extra_node_config}"
        runtime_port = free_port()
        argv = ["flower-supernode", "--superlink", self.address, "--port", str(runtime_port),
                "--node-config", node_config]
        if self.isolation == "process":
            argv += ["--isolation", "process", "--superexec-auth-secret-file", str(self.superexec_secret(name))]
        if self.insecure:
            argv.append("--insecure")
        else:
            if with_ca:
                argv += ["--root-certificates", str(self.certs / "ca.crt")]  # type: ignore[operator]
            key = self.key_path(partition_id if key_index is None else key_index)
            argv += ["--auth-supernode-private-key", str(key)]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        node = self._spawn(name, argv, self.workdir / name)
        if self.isolation == "process":
            self.superexecs[name] = self.start_superexec(name, f"127.0.0.1:{runtime_port}", tls=False)
        return node

    def kill(self, proc: ManagedProcess, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill one started process (and its group) now, e.g. to crash a SuperNode mid-run.

        A SuperNode's SuperExec (and the ClientApp it runs) goes with it, as on a crashed machine.
        """
        companion = self.superexecs.get(proc.name)
        if companion is not None and companion is not proc:
            self.kill(companion, sig)
        tree = descendants(proc.pid)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid, start in tree:
            _kill_if_same(pid, start, sig)
        proc.popen.wait(timeout=30)

    # -- runs ------------------------------------------------------------------------------
    def run(self, overrides: dict[str, Any], *, timeout: float = 3600.0,
            on_line: Callable[[str], None] | None = None, echo: bool = True) -> RunOutcome:
        """``flwr run <project> <connection> --stream -c ...``, then check status and results.

        ``overrides`` must hold an absolute ``output-dir`` (the ServerApp runs in the SuperLink's
        working directory) and ``num-server-rounds``. ``on_line`` sees every streamed log line.
        """
        run_dir = Path(str(overrides.get("output-dir", "")))
        if not run_dir.is_absolute():
            raise ValueError(f"output-dir={str(run_dir)!r} must be an absolute path for a deployment run")
        rounds = int(overrides["num-server-rounds"])
        log_path = self.workdir / "flwr-run.log"
        argv = ["flwr", "run", str(self.project), self.connection, "--stream",
                "--run-config", to_override_string(overrides)]
        started = time.monotonic()
        lines: list[str] = []
        run_id: int | None = None
        process = subprocess.Popen(argv, env=self.env(self.cli_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, start_new_session=True, cwd=self.cli_home)
        stream: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, stream), daemon=True)
        reader.start()
        deadline = started + timeout
        try:
            with log_path.open("a") as log_file:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeploymentError(f"flwr run exceeded {timeout:.0f} s; see {log_path}")
                    try:
                        line = stream.get(timeout=min(remaining, 5.0))
                    except queue.Empty:
                        continue
                    if line is None:
                        break
                    log_file.write(line)
                    log_file.flush()
                    lines.append(line)
                    if run_id is None and "Successfully started run" in line:
                        run_id = _run_id_of(line)
                    if echo and _worth_echoing(line):
                        print(_strip_ansi(line).rstrip(), flush=True)
                    if on_line is not None:
                        on_line(line)
            code = process.wait(timeout=30)
        except BaseException:
            # The run would go on without its CLI: cancel it on the SuperLink (best effort).
            if run_id is not None and self.superlink is not None and self.superlink.alive():
                try:
                    self.flwr("stop", str(run_id), self.connection, check=False, timeout=60)
                except DeploymentError:
                    pass
            raise
        finally:
            stop_tree(process)
        if code != 0:
            raise DeploymentError(f"flwr run exited with code {code}; see {log_path}")
        status = self.run_status(run_id)
        if status != RUN_STATUS_DONE:
            raise DeploymentError(f"run {run_id} ended with status {status!r}; see {log_path} and "
                                  f"{self.superlink.log_path if self.superlink else 'the SuperLink log'}")
        try:
            summary = check_results(run_dir, rounds)
        except SimulationError as error:
            raise DeploymentError(str(error)) from error
        return RunOutcome(run_id, status, run_dir, summary, time.monotonic() - started, log_path, lines)

    def run_status(self, run_id: int | None) -> str:
        """The run's status in ``flwr ls --format json`` (the newest run if the id is unknown)."""
        args = ["ls", self.connection, "--format", "json"] + (["--run-id", str(run_id)] if run_id else [])
        for attempt in range(3):  # a SuperLink busy with many SuperNodes may miss one CLI deadline
            try:
                answer = _json_of(self.flwr(*args).stdout)
            except DeploymentError:
                if attempt == 2:
                    raise
                continue
            if answer.get("success", True) or attempt == 2:
                break
        runs = answer.get("runs", [])
        if not runs:
            raise DeploymentError("flwr ls lists no run")
        run = max(runs, key=lambda r: int(r.get("run-id", 0)))
        if run_id is not None:
            run = next((r for r in runs if int(r.get("run-id", -1)) == run_id), run)
        return str(run.get("status", "unknown"))


def _pump(stream: Any, out: "queue.Queue[str | None]") -> None:
    for line in stream:
        out.put(line)
    out.put(None)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def _worth_echoing(line: str) -> bool:
    return any(marker in line for marker in ("[round ", "ERROR", "Traceback", "client failed", "results: "))


def _run_id_of(line: str) -> int | None:
    match = re.search(r"run\s+(\d+)", _strip_ansi(line))
    return int(match.group(1)) if match else None


def _json_of(text: str) -> dict[str, Any]:
    """The JSON object in a CLI's output (the CLI may print notices before it)."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError:
        return {}


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------
# Command line


def deploy(args: argparse.Namespace) -> RunOutcome:
    """Start everything, run once, check, stop everything (also on errors)."""
    started = time.monotonic()
    config, overrides = resolve_config(args.run_config or [], args.nodes)
    devices = [d.strip() for d in args.device.split(",")] if args.device else [""]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fedapp-deploy-")).resolve()
    print(f"[deploy] {config.algorithm} on {config.dataset}: SuperLink + {args.nodes} SuperNodes on loopback, "
          f"{'INSECURE (no TLS, no SuperNode authentication)' if args.insecure else 'TLS + SuperNode authentication'}; "
          f"logs: {workdir}", flush=True)
    certs = None
    if not args.insecure:
        certs = Path(args.certs).resolve() if args.certs else make_certs(workdir / "certs", args.nodes)
    with LocalDeployment(workdir, insecure=args.insecure, certs=certs, connection=args.connection,
                         isolation=args.isolation) as deployment:
        deployment.start_superlink()
        print(f"[deploy] SuperLink on {deployment.address} (pid {deployment.superlink.pid}) "  # type: ignore[union-attr]
              f"after {time.monotonic() - started:.1f} s", flush=True)
        if not args.insecure:
            for i in range(args.nodes):
                deployment.register(deployment.key_path(i).with_suffix(".pub"), name=f"supernode-{i}")
        for i in range(args.nodes):
            deployment.start_supernode(i, args.nodes, device=devices[i % len(devices)])
        deployment.wait_online(args.nodes)
        print(f"[deploy] {args.nodes} SuperNodes online after {time.monotonic() - started:.1f} s; "
              f"flwr run {deployment.project} {args.connection}", flush=True)
        outcome = deployment.run(overrides, timeout=args.timeout)
        stopping = time.monotonic()
    print(f"[deploy] stopped every process in {time.monotonic() - stopping:.1f} s; "
          f"total {time.monotonic() - started:.1f} s", flush=True)
    final = ", ".join(f"{k}={v:.4f}" for k, v in outcome.summary["final"].items() if isinstance(v, (int, float)))
    print(f"[deploy] run {outcome.run_id}: {outcome.status} in {outcome.seconds:.1f} s; final: {final}", flush=True)
    return outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/deploy_local.py", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="number of SuperNodes (default 2)")
    parser.add_argument("-c", "--run-config", action="append",
                        help='run-config overrides, e.g. -c "num-server-rounds=2 local-epochs=1"')
    parser.add_argument("--insecure", action="store_true",
                        help="no TLS and no SuperNode authentication (explicit opt-out; loopback debugging only)")
    parser.add_argument("--certs", default="",
                        help="make_certs.sh output to use (default: a fresh CA and keys in the work directory)")
    parser.add_argument("--device", default="cpu",
                        help='node-config device per SuperNode, comma-separated and assigned round-robin, e.g. '
                             '"cuda:0,cuda:1"; "" = the first visible CUDA device, else cpu (default cpu)')
    parser.add_argument("--connection", default=DEFAULT_CONNECTION, help="name of the CLI connection")
    parser.add_argument("--isolation", choices=ISOLATION_MODES, default="process",
                        help="process (default): separately started SuperExec processes run the ServerApp and "
                             "ClientApps away from the keys and state; subprocess: Flower's default, SuperLink and "
                             "SuperNodes start them as their own children")
    parser.add_argument("--workdir", default="", help="logs, FLWR_HOMEs and certificates (default: a new temp dir)")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="give up on the run after this many seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 1:
        print(f"error: --nodes={args.nodes} is not allowed; it must be >= 1", file=sys.stderr)
        return 2

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must stop what was started, even where a launching shell set SIGINT to "ignore"
    # (non-interactive shells do that for background jobs, and Python keeps an inherited ignore).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcome = deploy(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DeploymentError, SimulationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped the SuperLink and SuperNodes", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    print(f"results: {outcome.run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
