"""A real deployment on loopback: a SuperLink, SuperExecs and SuperNodes as separate processes.

:class:`LocalDeployment` starts each process in its own process group, working directory,
``FLWR_HOME`` and log file, talks to the SuperLink through the ``flwr`` CLI with a connection of
its own, and on exit stops every process it started with everything they started
(:mod:`fedapp.processes`: the SuperLink starts its SuperExec in a new session, so a process-group
kill alone would miss it and the ServerApp below it). ``python -m fedapp.deploy`` and the tests
drive it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fedapp.credentials import (
    connection_toml,
    missing_server_file,
    superlink_tls_args,
    supernode_key,
    supernode_tls_args,
    write_secret,
)
from fedapp.flwr_runs import (
    RUN_STATUS_DONE,
    RunError,
    RunOutput,
    check_results,
    flower_env,
    flwr_cli,
    free_port,
    json_of,
    port_open,
    run_status,
    strip_ansi,
)
from fedapp.overrides import to_override_string
from fedapp.processes import ManagedProcess, ProcessTree, signal_tree, stop_tree
from fedapp.results import PROJECT_ROOT

DEFAULT_CONNECTION = "local-deployment"
STARTUP_TIMEOUT = 120.0  # SuperLink up and answering the CLI; SuperNodes online (a loaded CI box)
CLI_TIMEOUT = 90.0  # one `flwr ...` CLI call (it imports flwr: several seconds when loaded)
STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL when the deployment stops
ISOLATION_MODES = ("process", "subprocess")
ECHOED = ("[round ", "ERROR", "Traceback", "client failed", "results: ")


class DeploymentError(RunError):
    """A process did not start, a run did not complete, or its results are missing."""


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
        self._tree = ProcessTree()
        missing = missing_server_file(self.certs) if self.certs is not None and not insecure else None
        if missing:
            raise ValueError(f"certs={str(self.certs)!r} lacks {missing}; run docker/make_certs.sh --out <dir>")

    # -- processes -------------------------------------------------------------------------
    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process this deployment started, all at once (one shared grace period)."""
        self._tree.stop(STOP_GRACE)

    def kill(self, proc: ManagedProcess, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill one started process with everything it started now, e.g. to crash a SuperNode mid-run.

        A SuperNode's SuperExec (and the ClientApp it runs) goes with it, as on a crashed machine.
        """
        companion = self.superexecs.get(proc.name)
        if companion is not None and companion is not proc:
            self.kill(companion, sig)
        signal_tree(proc.popen, sig)
        proc.popen.wait(timeout=30)

    @property
    def address(self) -> str:
        if self.port is None:
            raise DeploymentError("the SuperLink is not started")
        return f"127.0.0.1:{self.port}"

    def env(self, flwr_home: Path) -> dict[str, str]:
        """The environment of a process with its own ``FLWR_HOME`` (a deployment never uses Ray)."""
        return flower_env(flwr_home, self.project, drop=("RAY_ADDRESS",),
                          FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONUNBUFFERED="1")

    def _spawn(self, name: str, argv: list[str], flwr_home: Path) -> ManagedProcess:
        flwr_home.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = self._tree.popen(argv, env=self.env(flwr_home), stdout=log_file, stderr=subprocess.STDOUT,
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
        argv += ["--insecure"] if self.insecure else superlink_tls_args(self._certs())
        if self.isolation == "process":
            argv += ["--isolation", "process",
                     "--superexec-auth-secret-file", str(self.superexec_secret("superlink"))]
        self.superlink = self._spawn("superlink", argv, self.workdir / "superlink")
        if self.isolation == "process":
            self.superexecs["superlink"] = self.start_superexec("superlink", self.address, tls=not self.insecure)
        self.write_connection()
        deadline = time.monotonic() + timeout
        while not self._superlink_answers():
            if time.monotonic() > deadline:
                raise DeploymentError(f"the SuperLink at {self.address} did not answer within {timeout:.0f} s; "
                                      f"see {self.superlink.log_path}")
            time.sleep(1.0)
        return self.superlink

    def _superlink_answers(self) -> bool:
        assert self.superlink is not None and self.port is not None
        if not self.superlink.alive():
            raise DeploymentError(f"flower-superlink exited with code {self.superlink.popen.returncode}; "
                                  f"see {self.superlink.log_path}")
        if not port_open(self.port):
            return False
        try:
            answer = self.flwr("ls", self.connection, "--format", "json", check=False)
        except RunError:  # the CLI itself timed out on a loaded machine: try again
            return False
        return answer.returncode == 0 and bool(json_of(answer.stdout).get("success"))

    def superexec_secret(self, host: str) -> Path:
        """A random shared secret (mode 0600) for ``host``'s SuperExec HMAC authentication."""
        return write_secret(self.workdir / "secrets" / f"{host}.secret")

    def start_superexec(self, host: str, runtime_address: str, *, tls: bool) -> ManagedProcess:
        """``flower-superexec`` for ``host``: its own ``FLWR_HOME`` (the apps it unpacks), no keys.

        ``tls`` verifies the Runtime API with ``ca.crt`` (the SuperLink's port); a SuperNode's
        Runtime API listens on 127.0.0.1 without TLS, like Flower's own compose files.
        """
        argv = ["flower-superexec", "--runtime-api-address", runtime_address,
                "--superexec-auth-secret-file", str(self.superexec_secret(host))]
        argv += ["--root-certificates", str(self._ca())] if tls else ["--insecure"]
        name = f"superexec-{host}"
        return self._spawn(name, argv, self.workdir / name)

    def write_connection(self) -> Path:
        """``[superlink.<connection>]`` in the CLI's own ``FLWR_HOME/config.toml`` (the default one)."""
        path = self.cli_home / "config.toml"
        path.write_text(connection_toml(self.connection, self.address, None if self.insecure else self._ca()))
        return path

    def _certs(self) -> Path:
        assert self.certs is not None, "an insecure deployment has no certificates"
        return self.certs

    def _ca(self) -> Path:
        return self._certs() / "ca.crt"

    # -- CLI -------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        """One ``flwr`` CLI call with this deployment's connection (bounded in time)."""
        result = flwr_cli(args, self.env(self.cli_home), timeout, cwd=self.cli_home)
        if check and result.returncode != 0:
            raise DeploymentError(f"`flwr {' '.join(args)}` failed ({result.returncode}): "
                                  f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def register(self, public_key: Path, name: str | None = None) -> None:
        """``flwr supernode register <public key> <connection>`` (SuperNode authentication)."""
        args = ["supernode", "register", str(public_key), self.connection, "--format", "json"]
        if name:
            args += ["--name", name]
        answer = json_of(self.flwr(*args).stdout)
        if not answer.get("success", False):
            raise DeploymentError(f"registering {public_key} failed: {answer}")

    def nodes(self) -> list[dict[str, Any]]:
        """``flwr supernode list --format json``: the SuperLink's view of its SuperNodes."""
        answer = json_of(self.flwr("supernode", "list", self.connection, "--format", "json").stdout)
        return list(answer.get("nodes", []))

    def wait_online(self, count: int, timeout: float = STARTUP_TIMEOUT) -> list[dict[str, Any]]:
        """Wait until ``count`` SuperNodes are online; raises with their logs if they are not."""
        deadline = time.monotonic() + timeout
        online: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                online = [n for n in self.nodes() if n.get("status") == "online"]
            except RunError:  # one CLI call timed out on a loaded machine
                continue
            if len(online) >= count:
                return online
            time.sleep(2.0)
        logs = "\n".join(f"--- {p.name} ---\n{p.log()[-1500:]}" for p in self.processes if p.name.startswith("supernode"))
        raise DeploymentError(f"{len(online)} of {count} SuperNodes online after {timeout:.0f} s\n{logs}")

    # -- SuperNodes ------------------------------------------------------------------------
    def key_path(self, index: int) -> Path:
        """SuperNode ``index``'s private key (``.pub``: its public key)."""
        return supernode_key(self._certs(), index)

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
        key = partition_id if key_index is None else key_index
        argv += ["--insecure"] if self.insecure else supernode_tls_args(self._certs(), key, with_ca)
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        node = self._spawn(name, argv, self.workdir / name)
        if self.isolation == "process":
            self.superexecs[name] = self.start_superexec(name, f"127.0.0.1:{runtime_port}", tls=False)
        return node

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
        output = RunOutput(self.workdir / "flwr-run.log", keep_lines=True)
        argv = ["flwr", "run", str(self.project), self.connection, "--stream",
                "--run-config", to_override_string(overrides)]
        started = time.monotonic()
        process = self._tree.popen(argv, env=self.env(self.cli_home), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                   start_new_session=True, cwd=self.cli_home)
        try:
            code = output.follow(process, timeout, lambda line: _show(line, echo, on_line))
        except BaseException:
            self._cancel(output.run_id)  # the run would go on without its CLI
            raise
        finally:
            stop_tree(process)
        if code != 0:
            raise DeploymentError(f"flwr run exited with code {code}; see {output.log_path}")
        status = self.run_status(output.run_id)
        if status != RUN_STATUS_DONE:
            raise DeploymentError(f"run {output.run_id} ended with status {status!r}; see {output.log_path} and "
                                  f"{self.superlink.log_path if self.superlink else 'the SuperLink log'}")
        summary = check_results(run_dir, rounds)
        return RunOutcome(output.run_id, status, run_dir, summary, time.monotonic() - started, output.log_path,
                          output.lines)

    def _cancel(self, run_id: int | None) -> None:
        """``flwr stop <run id>`` on the SuperLink (best effort)."""
        if run_id is not None and self.superlink is not None and self.superlink.alive():
            try:
                self.flwr("stop", str(run_id), self.connection, check=False, timeout=60)
            except RunError:
                pass

    def run_status(self, run_id: int | None) -> str:
        """The run's status in ``flwr ls --format json`` (the newest run if the id is unknown)."""
        return run_status(lambda args: self.flwr("ls", self.connection, *args).stdout, run_id)


def _show(line: str, echo: bool, on_line: Callable[[str], None] | None) -> None:
    if echo and any(marker in line for marker in ECHOED):
        print(strip_ansi(line).rstrip(), flush=True)
    if on_line is not None:
        on_line(line)
