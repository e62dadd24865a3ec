"""A federation across "machines": Linux network namespaces on a private bridge, as in docs/DEPLOYMENT.md.

Five namespaces (each a host with its own network stack, HOME and FLWR_HOME) hang off a bridge
that lives in a sixth, the "switch"; every address (10.200.0.0/24) exists inside these namespaces
only, nothing is added to or sent from the host's own network:

    server       10.200.0.1  flower-superlink (TLS, SuperNode auth, --isolation process) + its SuperExec
    client-0/1   10.200.0.2/3  flower-supernode (--isolation process) + its SuperExec each
    workstation  10.200.0.4  the flwr CLI: registers keys, submits the run, lists runs
    rogue        10.200.0.5  an unregistered SuperNode, then one whose CA does not match

The test follows the documented steps in order (certificates with the server's address and name
in the SANs, only the files each machine needs copied to it, the connection entry, key
registration, SuperLink, SuperExecs, SuperNodes, ``flwr run``) and checks: the run is
``finished:completed`` in ``flwr ls --format json`` on the workstation, the run directory with
every round lies on the server host, each machine unpacked the app under its own
``~/.flwr/apps``, the rogue nodes are refused (code 2004 / CERTIFICATE_VERIFY_FAILED), and the
CLI's answers for a wrong CA are the ones the docs quote.

Where this Python environment can be run by another user, the SuperExecs run as an unprivileged
user (``nobody``) with their own home, as the trust model in the docs asks (a venv whose
interpreter lives under a private home, e.g. pyenv in /root, cannot: then they run as the
caller, in homes of their own, and the permission checks are skipped): the ServerApp and ClientApps they start (the submitted code) run as that user
too, and the test checks that this user cannot read ``server.key``, the SuperLink's database or
a SuperNode's private key, while the run still completes. Every process, namespace and folder it
made is removed at the end, also on failure. It skips (with the reason) where namespaces cannot
be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from fedapp.deploy import _json_of, descendants, make_certs, stop_tree
from tests.conftest import assert_finished

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUBNET = "10.200.0"
SERVER_IP = f"{SUBNET}.1"
SERVER_NAME = "superlink.fed.test"
PORT = 9092  # every host has its own network stack: the documented default ports never clash
HOSTS = {"server": 1, "client-0": 2, "client-1": 3, "workstation": 4, "rogue": 5}
WAIT = 600.0  # upper bound for a process to come up on a heavily loaded 2-core machine (~1 min when idle)
RUN_TIMEOUT = 900.0
APP_USER = 65534  # nobody: runs the SuperExecs and so every submitted ServerApp/ClientApp


def _app_user_can_run_python() -> bool:
    """Whether ``nobody`` can start this environment's Python (and so flower-superexec)."""
    # What a SuperExec does: its Python starts a console script of the environment (flwr-serverapp).
    code = "import subprocess; subprocess.run(['flwr-serverapp', '--help'], check=True, capture_output=True)"
    env = dict(os.environ, PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""), HOME="/")
    try:
        probe = subprocess.run(["setpriv", f"--reuid={APP_USER}", f"--regid={APP_USER}", "--clear-groups",
                                sys.executable, "-c", code], capture_output=True, timeout=300, env=env, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is missing"
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return "needs root (network namespaces, SuperExecs as another user) and setpriv (util-linux)"
    if not (shutil.which("openssl") and shutil.which("ssh-keygen")):
        return "openssl and ssh-keygen are needed for certificates and SuperNode keys"
    probe = f"fedprobe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"creating a network namespace is not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Network:
    """Namespaces on a private bridge; ``close()`` stops every process started in them and deletes them."""

    def __init__(self, workdir: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.workdir = workdir  # logs
        # Every host's home lies outside pytest's 0700 temp tree, in world-traversable folders, so
        # that only each file's own mode keeps the SuperExec user out (as on a real machine).
        self.homes = Path(tempfile.mkdtemp(prefix="fedmh-"))
        self.homes.chmod(0o755)
        self.app_user = APP_USER if _app_user_can_run_python() else os.geteuid()
        self.namespaces: list[str] = []
        self.etc_dirs: list[Path] = []
        self.processes: dict[str, subprocess.Popen] = {}

    def ns(self, host: str) -> str:
        return f"fed{self.tag}-{host}"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def build(self) -> None:
        switch = self.ns("switch")
        self._ip("netns", "add", switch)
        self.namespaces.append(switch)
        self._ip("-n", switch, "link", "add", "br0", "type", "bridge")
        self._ip("-n", switch, "link", "set", "br0", "up")
        for host, index in HOSTS.items():
            ns = self.ns(host)
            self._ip("netns", "add", ns)
            self.namespaces.append(ns)
            # The veth pair is created inside the switch namespace, its peer moved straight into
            # the host's: nothing ever appears in the machine's own network namespace.
            port = f"p{index}"
            self._ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip("-n", switch, "link", "set", port, "master", "br0", "up")
            self._ip("-n", ns, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: the server's DNS name.
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            self.etc_dirs.append(etc)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{SERVER_IP} {SERVER_NAME}\n")

    def app_home(self, host: str) -> Path:
        """Home of ``host``'s SuperExec user (owned by it)."""
        home = self.homes / f"{host}-superexec"
        if not home.is_dir():
            home.mkdir()
            os.chown(home, self.app_user, self.app_user)
        return home

    def home(self, host: str) -> Path:
        """Home of ``host``'s services (SuperLink / SuperNode / CLI user), root-owned, 0755."""
        home = self.homes / host
        home.mkdir(mode=0o755, exist_ok=True)
        return home

    def env(self, host: str, home: Path | None = None) -> dict[str, str]:
        home = home or self.home(host)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "RAY_"))}
        env.update(HOME=str(home), FLWR_HOME=str(home / ".flwr"), FLWR_TELEMETRY_ENABLED="0",
                   FLWR_DISABLE_UPDATE_CHECK="1", PYTHONUNBUFFERED="1",
                   PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""))
        return env

    def start(self, host: str, name: str, argv: list[str], as_app_user: bool = False) -> subprocess.Popen:
        """``argv`` on ``host`` in the background, in its home directory, logged to ``<name>.log``;
        ``as_app_user``: as the unprivileged SuperExec user, in its own home."""
        log = (self.workdir / f"{name}.log").open("wb")
        home = self.app_home(host) if as_app_user else self.home(host)
        drop = []
        if as_app_user and self.app_user != os.geteuid():
            drop = ["setpriv", f"--reuid={self.app_user}", f"--regid={self.app_user}", "--clear-groups"]
        process = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *drop, *argv], env=self.env(host, home),
                                   cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def run(self, host: str, argv: list[str], timeout: float = 180.0) -> subprocess.CompletedProcess:
        """``argv`` on ``host``; a call that outlives ``timeout`` is killed and reads as exit 124 with
        the output it printed (a CLI call on a loaded machine: the waits below try again)."""
        command = ["ip", "netns", "exec", self.ns(host), *argv]
        try:
            return subprocess.run(command, env=self.env(host), cwd=self.home(host), capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            # Under heavy load the CLI has been seen to print its whole answer and then take
            # minutes to exit: keep what it printed.
            out = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout or ""
            return subprocess.CompletedProcess(command, 124, out, f"timed out after {timeout:.0f} s")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def close(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_tree(process)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for etc in self.etc_dirs:
            shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(self.homes, ignore_errors=True)


def _wait_for(what: str, check, timeout: float = WAIT, logs: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{logs}")
        time.sleep(2.0)


def _copy(files: dict[str, Path], target: Path, mode: int | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copy(source, target / name)
        if mode is not None:
            (target / name).chmod(mode)


@pytest.mark.slow
def test_multihost_federation_over_network_namespaces(tmp_path):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    net = Network(tmp_path)
    try:
        net.build()
        _federation(net, tmp_path)
    finally:
        net.close()
    # Nothing of it is left: no namespace, no process started under its directories.
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fed{net.tag}-" not in listed
    for process in net.processes.values():
        assert process.poll() is not None
        assert not [pid for pid, _ in descendants(process.pid)]


def _federation(net: Network, tmp: Path) -> None:
    # Step 1 (trusted machine): a CA, the server certificate with the server's address and name,
    # 3 SuperNode key pairs (key 2 is never registered); a second, unrelated CA for the rogue.
    certs = make_certs(tmp / "certs", nodes=3, hosts=[SERVER_IP, SERVER_NAME])
    other = make_certs(tmp / "other-ca", nodes=1)
    sans = subprocess.run(["openssl", "x509", "-in", str(certs / "server.pem"), "-noout", "-ext",
                           "subjectAltName"], capture_output=True, text=True, check=True).stdout
    for san in (f"IP Address:{SERVER_IP}", f"DNS:{SERVER_NAME}", "IP Address:127.0.0.1", "DNS:localhost"):
        assert san in sans, sans
    keys = certs / "keys"

    # Only what each machine needs (the docs' table).
    server, ws = net.home("server"), net.home("workstation")
    _copy({n: certs / n for n in ("ca.crt", "server.pem", "server.key")}, server / "certs")
    (server / "certs" / "server.key").chmod(0o600)
    # The SuperExec secret is the one file both users read: the service's copy, and one for the
    # SuperExec user in its home.
    _copy({"superexec.secret": certs / "superexec" / "superlink.secret"}, server, mode=0o600)
    _give_app_user(net, "server", {"ca.crt": certs / "ca.crt", "superexec.secret": server / "superexec.secret"})
    for i in (0, 1):
        client = net.home(f"client-{i}")
        _copy({"ca.crt": certs / "ca.crt"}, client)
        _copy({f"supernode-{i}": keys / f"supernode-{i}",
               "superexec.secret": certs / "superexec" / f"supernode-{i}.secret"}, client, mode=0o600)
        _give_app_user(net, f"client-{i}", {"superexec.secret": client / "superexec.secret"})
    _copy({"ca.crt": certs / "ca.crt", **{f"supernode-{i}.pub": keys / f"supernode-{i}.pub" for i in (0, 1)}}, ws)
    rogue = net.home("rogue")
    _copy({"ca.crt": certs / "ca.crt", "other-ca.crt": other / "ca.crt"}, rogue)
    _copy({"supernode-2": keys / "supernode-2", "supernode-0": keys / "supernode-0"}, rogue, mode=0o600)

    # Step 2 (server): the SuperLink, then its SuperExec (no key, no database; it reaches the
    # SuperLink's Runtime API on 127.0.0.1, hence the loopback SANs).
    net.start("server", "superlink", [
        "sh", "-c", 'umask 077 && exec "$@"', "sh",  # the state database is created 0600
        "flower-superlink", "--host", "0.0.0.0", "--port", str(PORT),
        "--ssl-ca-certfile", "certs/ca.crt", "--ssl-certfile", "certs/server.pem", "--ssl-keyfile", "certs/server.key",
        "--enable-supernode-auth", "--isolation", "process", "--superexec-auth-secret-file", "superexec.secret",
        "--database", "superlink.db", "--disable-runtime-dependency-installation"])
    net.start("server", "superexec-server", [
        "flower-superexec", "--runtime-api-address", f"127.0.0.1:{PORT}", "--root-certificates", "ca.crt",
        "--superexec-auth-secret-file", "superexec.secret"], as_app_user=True)

    # Step 3 (workstation): the connection, by IP address; `flwr ls` must answer.
    (ws / ".flwr").mkdir(parents=True)
    (ws / ".flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "lab"\n\n[superlink.lab]\naddress = "{SERVER_IP}:{PORT}"\n'
        f'root-certificates = "{ws / "ca.crt"}"\n\n'
        f'[superlink.wrong-ca]\naddress = "{SERVER_IP}:{PORT}"\nroot-certificates = "{other / "ca.crt"}"\n')

    def listed() -> dict:
        answer = net.run("workstation", ["flwr", "ls", "lab", "--format", "json"])
        return _json_of(answer.stdout)

    _wait_for("the SuperLink answering the workstation's CLI", lambda: listed().get("success") is True,
              logs=net.log("superlink")[-3000:])

    # (a), (d): a CA that does not match is "unavailable" to the CLI, and --format json still exits 0.
    wrong = net.run("workstation", ["flwr", "ls", "wrong-ca", "--format", "json"])
    assert wrong.returncode == 0 and _json_of(wrong.stdout).get("success") is False, wrong.stdout + wrong.stderr
    assert "unavailable" in (wrong.stdout + wrong.stderr).lower()

    # Step 4 (workstation): register the two public keys.
    node_ids = {}
    for i in (0, 1):
        answer = net.run("workstation", ["flwr", "supernode", "register", f"supernode-{i}.pub", "lab",
                                         "--format", "json"])
        reply = _json_of(answer.stdout)
        assert reply.get("success") is True, answer.stdout + answer.stderr
        node_ids[i] = str(reply["node-id"])

    # Step 5 (clients): each SuperNode reaches the server by name, then its own SuperExec.
    for i in (0, 1):
        host = f"client-{i}"
        net.start(host, f"supernode-{i}", [
            "flower-supernode", "--superlink", f"{SERVER_NAME}:{PORT}", "--root-certificates", "ca.crt",
            "--auth-supernode-private-key", f"supernode-{i}", "--isolation", "process", "--port", "9094",
            "--superexec-auth-secret-file", "superexec.secret",
            "--node-config", f'partition-id={i} num-partitions=2 device="cpu"'])
        net.start(host, f"superexec-{host}", [
            "flower-superexec", "--runtime-api-address", "127.0.0.1:9094", "--insecure",
            "--superexec-auth-secret-file", "superexec.secret"], as_app_user=True)

    # The rogue machine: an unregistered key, then a registered key with a CA that does not match.
    unregistered = net.start("rogue", "unregistered", [
        "flower-supernode", "--superlink", f"{SERVER_NAME}:{PORT}", "--root-certificates", "ca.crt",
        "--auth-supernode-private-key", "supernode-2", "--max-retries", "0", "--port", "9094",
        "--node-config", "partition-id=0 num-partitions=2"])
    wrong_ca = net.start("rogue", "wrong-ca", [
        "flower-supernode", "--superlink", f"{SERVER_NAME}:{PORT}", "--root-certificates", "other-ca.crt",
        "--auth-supernode-private-key", "supernode-0", "--max-retries", "0", "--port", "9095",
        "--node-config", "partition-id=0 num-partitions=2"])

    def online() -> set[str]:
        answer = _json_of(net.run("workstation", ["flwr", "supernode", "list", "lab", "--format", "json"]).stdout)
        return {str(n["node-id"]) for n in answer.get("nodes", []) if n.get("status") == "online"}

    _wait_for("both SuperNodes online", lambda: online() == set(node_ids.values()),
              logs="\n".join(net.log(f"supernode-{i}")[-1500:] for i in (0, 1)))

    # (c): the unregistered node exits 1 and only its log names the cause.
    assert unregistered.wait(timeout=WAIT) != 0, net.log("unregistered")[-2000:]
    assert "[code: 2004] Failed to activate SuperNode" in net.log("unregistered")
    assert wrong_ca.wait(timeout=WAIT) != 0, net.log("wrong-ca")[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in net.log("wrong-ca")
    assert online() == set(node_ids.values())

    # Step 6 (workstation): the run; the results land on the server host.
    run_dir = net.app_home("server") / "runs" / "multihost"
    overrides = f'num-server-rounds=1 local-epochs=1 output-dir="{run_dir}"'
    submitted = net.run("workstation", ["flwr", "run", str(ROOT), "lab", "--stream", "-c", overrides],
                        timeout=RUN_TIMEOUT)
    (tmp / "flwr-run.log").write_text(submitted.stdout + submitted.stderr)
    assert submitted.returncode == 0, (submitted.stdout + submitted.stderr)[-3000:]
    runs = listed().get("runs", [])
    assert [r["status"] for r in runs] == ["finished:completed"], runs
    rows, _ = assert_finished(run_dir, 1)
    assert (rows[0]["clients_selected"], rows[0]["clients_ok"]) == (2, 2), rows
    assert (run_dir / "checkpoint.npz").is_file()

    # (h): every machine that ran app code unpacked the bundle under the SuperExec user's
    # ~/.flwr/apps; the SuperLink's and SuperNodes' own homes got none.
    for host in ("server", "client-0", "client-1"):
        apps = list((net.app_home(host) / ".flwr" / "apps").glob("*"))
        assert apps, f"{host} has no ~/.flwr/apps"
        assert all(a.stat().st_uid == net.app_user for a in apps)
        assert not (net.home(host) / ".flwr" / "apps").exists(), f"{host}: app code unpacked by a service"
    # The submitted code ran as the SuperExec user (the ServerApp wrote the results as it) and that
    # user cannot read what the services keep private.
    assert (run_dir / "summary.json").stat().st_uid == net.app_user
    for secret in (server / "certs" / "server.key", server / "superlink.db", net.home("client-0") / "supernode-0"):
        assert secret.exists(), secret
        if net.app_user == os.geteuid():
            continue  # this Python cannot run as another user here (see the module docstring)
        probe = subprocess.run(["setpriv", f"--reuid={APP_USER}", f"--regid={APP_USER}", "--clear-groups",
                                "cat", str(secret)], capture_output=True, text=True)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, (secret, probe.stderr)
    # Keys and state stayed with the long-running services: the SuperExecs' command lines name none.
    superexec_argv = " ".join(" ".join(net.processes[n].args) for n in net.processes if n.startswith("superexec"))
    assert "server.key" not in superexec_argv and "superlink.db" not in superexec_argv
    assert "supernode-0" not in superexec_argv and "supernode-1" not in superexec_argv
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 1


def _give_app_user(net: Network, host: str, files: dict[str, Path]) -> None:
    """Copy ``files`` into ``host``'s SuperExec home, owned by that user, mode 0600."""
    home = net.app_home(host)
    for name, source in files.items():
        shutil.copy(source, home / name)
        os.chown(home / name, net.app_user, net.app_user)
        (home / name).chmod(0o600)
