"""Docker deployment files: compose variants, Dockerfile, certificates and key registration.

The compose files are read with pyyaml (overrides merged the way Compose merges them) and the
flags they pass are parsed by flwr 1.41's own argument parsers. Where the `docker-compose` binary
exists, it validates every variant and its merge is compared with ours. `docker/make_certs.sh`
is run for real (openssl, ssh-keygen), and a slow test starts a real SuperLink and SuperNodes
with the flags and mounts of compose.yml, registering keys with docker/register_supernodes.sh.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
MAKE_CERTS = DOCKER / "make_certs.sh"
REGISTER = DOCKER / "register_supernodes.sh"
VENV_BIN = Path(sys.executable).parent

# variant name -> compose files, in `docker compose -f A -f B` order
VARIANTS = {
    "2gpu": ["compose.yml"],
    "4gpu": ["compose.yml", "compose.4gpu.yml"],
    "cpu": ["compose.cpu.yml"],
    "insecure": ["compose.yml", "compose.insecure.yml"],
    "cpu-insecure": ["compose.cpu.yml", "compose.insecure.yml"],
}
SECURE = ["2gpu", "4gpu", "cpu"]
GPU = {"2gpu": 2, "4gpu": 4}
SUPERLINK_PORT = 9092


# --------------------------------------------------------------------------------------------
# Loading and merging compose files


def _volume_target(entry: str | dict) -> str:
    return entry["target"] if isinstance(entry, dict) else parse_volume(entry)[1]


def _merge(base, override, key: str | None = None):
    """Merge like Compose: mappings recursively, volumes by container path, other lists replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key == "volumes" and isinstance(base, list) and isinstance(override, list):
        by_target = {_volume_target(v): v for v in base}
        by_target.update({_volume_target(v): v for v in override})
        return list(by_target.values())
    return copy.deepcopy(override)


def load(variant: str) -> dict:
    config: dict = {}
    for name in VARIANTS[variant]:
        data = yaml.safe_load((DOCKER / name).read_text())
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
        config = _merge(config, data)
    return config


def parse_volume(entry: str) -> tuple[str, str, str]:
    """'SRC:/container/path[:mode]' -> (src, target, mode); SRC may hold ${VAR:-default}."""
    m = re.fullmatch(r"(?P<src>.+?):(?P<dst>/[^:]*)(?::(?P<mode>[a-z,]+))?", entry)
    assert m, f"unparsable volume entry {entry!r}"
    return m["src"], m["dst"], m["mode"] or "rw"


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode)"""
    out = {}
    for entry in service.get("volumes", []):
        src, dst, mode = parse_volume(entry)
        assert dst not in out, f"{dst} mounted twice"
        out[dst] = (src, mode)
    return out


def expand(src: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} interpolation with the given environment."""

    def repl(m: re.Match) -> str:
        return env.get(m["var"]) or (m["default"] or "")

    return re.sub(r"\$\{(?P<var>\w+)(?::-(?P<default>[^}]*))?\}", repl, src)


def argv(service: dict) -> list[str]:
    """The process argv: entrypoint + command (both lists in these files)."""
    entrypoint, command = service.get("entrypoint", []), service.get("command", [])
    assert isinstance(entrypoint, list) and isinstance(command, list)
    return [str(a) for a in entrypoint + command]


def flag_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def supernodes(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["services"].items() if k.startswith("supernode-")}


def superexecs(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["services"].items() if k.startswith("superexec-")}


def node_config(service: dict) -> dict:
    from flwr.common.config import parse_config_args

    value = flag_value(argv(service), "--node-config")
    assert value is not None, "SuperNode without --node-config"
    return parse_config_args([value])


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def parse_superlink_args(args: list[str]):
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    assert args[0] == "flower-superlink"
    return _parse_args_run_superlink().parse_args(args[1:])


def parse_superexec_args(args: list[str]):
    from flwr.supercore.cli.flower_superexec import _parse_args

    assert args[0] == "flower-superexec"
    return _parse_args().parse_args(args[1:])


def parse_supernode_args(args: list[str]):
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    assert args[0] == "flower-supernode"
    return _parse_args_run_supernode().parse_args(args[1:])


# --------------------------------------------------------------------------------------------
# Structure of each variant


@pytest.mark.parametrize("variant", list(GPU))
def test_one_supernode_per_gpu_with_distinct_devices(variant):
    n = GPU[variant]
    config = load(variant)
    nodes = supernodes(config)
    assert sorted(nodes) == [f"supernode-{i}" for i in range(n)]
    for name, node in nodes.items():
        # The ClientApps (the GPU work) run in the node's SuperExec container, not the SuperNode's.
        assert gpu_devices(node) == [], f"{name} reserves a GPU it never uses"
        svc = config["services"][f"superexec-{name}"]
        devices = gpu_devices(svc)
        assert len(devices) == 1, f"{name}: expected one GPU reservation, got {devices}"
        (dev,) = devices
        assert dev["driver"] == "nvidia"
        assert "gpu" in dev["capabilities"]
        assert "count" not in dev, "device_ids and count are mutually exclusive"
        index = name.split("-")[1]
        assert [str(d) for d in dev["device_ids"]] == [index], f"{name} pinned to {dev}"
        # The single GPU handed to the container is its cuda:0.
        assert node_config(node)["device"] == "cuda:0"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_partition_ids_cover_num_partitions(variant):
    nodes = supernodes(load(variant))
    configs = {name: node_config(svc) for name, svc in nodes.items()}
    n = len(nodes)
    assert n >= 2
    assert {c["num-partitions"] for c in configs.values()} == {n}
    assert sorted(c["partition-id"] for c in configs.values()) == list(range(n))
    for name, c in configs.items():
        assert c["partition-id"] == int(name.split("-")[1]), f"{name}: {c}"
        assert c["data-root"] == "/data"
        assert set(c) == {"partition-id", "num-partitions", "device", "data-root"}


@pytest.mark.parametrize("variant", ["cpu", "cpu-insecure"])
def test_cpu_variant_has_no_gpu_reservations(variant):
    config = load(variant)
    for name, svc in config["services"].items():
        assert "deploy" not in svc, f"{name} still has a deploy section: {svc.get('deploy')}"
        assert "runtime" not in svc and "devices" not in svc
    for svc in supernodes(config).values():
        assert node_config(svc)["device"] == "cpu"


@pytest.mark.parametrize("variant", SECURE)
def test_superlink_tls_and_supernode_auth(variant):
    config = load(variant)
    link = config["services"]["superlink"]
    args = argv(link)
    assert "--insecure" not in args
    parsed = parse_superlink_args(args)
    assert not parsed.insecure
    assert parsed.enable_supernode_auth
    assert parsed.runtime_dependency_install is False
    assert parsed.host == "0.0.0.0" and parsed.port == SUPERLINK_PORT
    assert parsed.database.startswith("/state/")
    assert parsed.isolation == "process"  # runs nothing submitted; superexec-serverapp does
    link_mounts = mounts(link)
    secret = parsed.superexec_auth_secret_file
    assert link_mounts[secret][0].endswith("/superexec/superlink.secret") and link_mounts[secret][1] == "ro"
    assert "/data" not in link_mounts and "/results" not in link_mounts
    assert link_mounts["/state"][0] == "superlink-state"
    for flag, name in [
        ("--ssl-ca-certfile", "ca.crt"),
        ("--ssl-certfile", "server.pem"),
        ("--ssl-keyfile", "server.key"),
    ]:
        path = flag_value(args, flag)
        assert path in link_mounts, f"{flag} {path} is not mounted"
        src, mode = link_mounts[path]
        assert src.endswith(f"/{name}") and mode == "ro", (flag, src, mode)
    # Only the SuperLink's own material: no CA key, no SuperNode private keys.
    sources = [src for src, _ in link_mounts.values()]
    assert not any(s.endswith("ca.key") or "/keys" in s for s in sources), sources
    # Published on loopback only, on the port the SuperLink listens on.
    assert link["ports"] == [f"127.0.0.1:{SUPERLINK_PORT}:{SUPERLINK_PORT}"]


@pytest.mark.parametrize("variant", SECURE)
def test_supernodes_use_tls_and_their_own_key(variant):
    config = load(variant)
    for name, svc in supernodes(config).items():
        args = argv(svc)
        assert "--insecure" not in args
        parsed = parse_supernode_args(args)
        assert not parsed.insecure
        assert parsed.superlink == f"superlink:{SUPERLINK_PORT}"
        assert parsed.isolation == "process"
        m = mounts(svc)
        secret = parsed.superexec_auth_secret_file
        assert m[secret] == (f"${{FEDAPP_CERTS_DIR:-./certs}}/superexec/{name}.secret", "ro")
        assert "/data" not in m
        ca = parsed.root_certificates
        assert ca in m and m[ca][0].endswith("/ca.crt") and m[ca][1] == "ro"
        key = parsed.auth_supernode_private_key
        assert key in m, f"{name}: private key {key} not mounted"
        src, mode = m[key]
        assert src.endswith(f"/keys/{name}") and mode == "ro", (name, src, mode)
        others = [s for s, _ in m.values() if "/keys/" in s and not s.endswith(f"/keys/{name}")]
        assert not others, f"{name} mounts other nodes' keys: {others}"
        assert not any(s.endswith(("ca.key", "server.key")) for s, _ in m.values())
        assert svc["depends_on"]["superlink"]["condition"] == "service_healthy"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_data_read_only_and_results_only_where_the_serverapp_runs(variant):
    config = load(variant)
    for name, svc in config["services"].items():
        m = mounts(svc)
        if name.startswith("superexec-"):
            assert m["/data"][1] == "ro", f"{name}: /data must be read-only"
        else:
            assert "/data" not in m, f"{name} runs no app code and needs no data"
        if name == "superexec-serverapp":
            assert m["/results"][1] == "rw"
        else:
            assert "/results" not in m, f"{name} should not see the results directory"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_default_output_dir_lands_on_the_results_volume(variant, monkeypatch):
    """The ServerApp runs in the superexec-serverapp container: with FEDAPP_HOME=/results a
    relative or default output-dir resolves onto the mounted results volume, not into the container."""
    from fedapp.results import resolve_run_dir

    link = load(variant)["services"]["superexec-serverapp"]
    env = link.get("environment", {})
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    assert env.get("FEDAPP_HOME") == "/results"
    assert mounts(link)["/results"][1] == "rw"
    monkeypatch.setenv("FEDAPP_HOME", env["FEDAPP_HOME"])
    assert resolve_run_dir("", "fedavg", "ml-digits").parent == Path("/results/outputs")
    assert resolve_run_dir("lt", "fedloge", "lt-digits") == Path("/results/lt")


@pytest.mark.parametrize("variant", ["insecure", "cpu-insecure"])
def test_insecure_override_is_explicit_and_complete(variant):
    config = load(variant)
    link_args = argv(config["services"]["superlink"])
    parsed = parse_superlink_args(link_args)
    assert parsed.insecure and not parsed.enable_supernode_auth
    assert flag_value(link_args, "--ssl-certfile") is None
    for name, svc in supernodes(config).items():
        parsed = parse_supernode_args(argv(svc))
        assert parsed.insecure, name
        assert parsed.root_certificates is None and parsed.auth_supernode_private_key is None
    serverapp = parse_superexec_args(argv(config["services"]["superexec-serverapp"]))
    assert serverapp.insecure and serverapp.root_certificates is None
    # Insecure mode exists only in a file named so. Elsewhere the flag appears only where a
    # SuperExec reaches its own SuperNode's Runtime API on that node's private network.
    for path in DOCKER.glob("compose*.yml"):
        services = yaml.safe_load(path.read_text())["services"]
        if "insecure" in path.name:
            assert "--insecure" in json.dumps(services)
            continue
        for name, svc in services.items():
            if "--insecure" in json.dumps(svc):
                assert name.startswith("superexec-supernode-"), f"{path.name}: {name} is insecure"
                args = argv(svc)
                node = name.removeprefix("superexec-")
                assert parse_superexec_args(args).runtime_api_address == f"{node}:9094"
                assert svc["networks"] == [name.replace("superexec-supernode", "node")], svc["networks"]


def test_4gpu_override_changes_num_partitions_of_every_node():
    base = supernodes(load("2gpu"))
    override = yaml.safe_load((DOCKER / "compose.4gpu.yml").read_text())["services"]
    for name in base:
        assert name in override, f"compose.4gpu.yml must redefine {name} (num-partitions=4)"
    assert {node_config(s)["num-partitions"] for s in supernodes(load("4gpu")).values()} == {4}


# --------------------------------------------------------------------------------------------
# Keys out of reach of submitted code, and container hardening


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_superexecs_run_the_apps_without_keys_or_state(variant):
    """Submitted ServerApp/ClientApp code runs only in superexec-* containers: they reach their
    own SuperLink/SuperNode's Runtime API with the shared SuperExec secret and hold no private
    key, CA key or state database."""
    config = load(variant)
    services = config["services"]
    execs = superexecs(config)
    assert sorted(execs) == ["superexec-serverapp"] + [f"superexec-{n}" for n in sorted(supernodes(config))]
    for name, svc in execs.items():
        parsed = parse_superexec_args(argv(svc))
        m = mounts(svc)
        sources = [src for src, _ in m.values()]
        assert not any(src.endswith(("server.key", "ca.key")) or "/keys/" in src for src in sources), (name, sources)
        assert not any(dst.startswith("/state") or src == "superlink-state" for dst, (src, _) in m.items()), name
        assert "deploy" not in svc or name != "superexec-serverapp"
        host = "superlink" if name == "superexec-serverapp" else name.removeprefix("superexec-")
        target = services[host]
        assert parsed.runtime_api_address.split(":")[0] == host
        # The secret it signs with is the one its SuperLink/SuperNode checks.
        own = m[parsed.superexec_auth_secret_file]
        theirs = mounts(target)[flag_value(argv(target), "--superexec-auth-secret-file")]
        assert own == theirs, (name, own, theirs)
        assert flag_value(argv(target), "--isolation") == "process"
        # It shares a network with its target (to reach the Runtime API) and with nothing public.
        assert set(svc["networks"]) & set(target["networks"]), name
        assert "public" not in svc["networks"] and "federation" not in svc["networks"], name
        if variant in SECURE and name == "superexec-serverapp":
            assert m[parsed.root_certificates][0].endswith("/ca.crt") and not parsed.insecure


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_container_is_hardened(variant):
    config = load(variant)
    for name, svc in config["services"].items():
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc.get("mem_limit"), f"{name} has no memory limit"
        assert isinstance(svc.get("pids_limit"), int) and svc["pids_limit"] > 0, name
        assert svc["restart"] in ("on-failure", "unless-stopped"), name
        assert svc["init"] is True, name
        assert "privileged" not in svc and "network_mode" not in svc, name
    for name, svc in supernodes(config).items():
        test = " ".join(svc["healthcheck"]["test"])
        assert "9094" in test, f"{name}: healthcheck does not probe its Runtime API port"
        assert svc["restart"] == "on-failure"  # an unregistered node retries until registered
        assert "public" not in svc["networks"], f"{name} must not be on the public network"
    # Only the SuperLink publishes a port and is on a non-internal network.
    networks = {}
    for name in VARIANTS[variant]:
        networks.update(yaml.safe_load((DOCKER / name).read_text()).get("networks", {}) or {})
    for name, svc in config["services"].items():
        for network in svc["networks"]:
            assert network in networks, f"{name}: network {network} is not declared"
            if name != "superlink":
                assert (networks[network] or {}).get("internal") is True, (name, network)
        if name != "superlink":
            assert "ports" not in svc, f"{name} publishes a port"


# --------------------------------------------------------------------------------------------
# docker-compose itself (installed in CI: apt-get install docker-compose)

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose binary not installed (apt-get install -y docker-compose); "
    "structure is still checked with pyyaml above",
)


def _compose(files: list[str], *args: str) -> subprocess.CompletedProcess:
    cmd = ["docker-compose"]
    for f in files:
        cmd += ["-f", str(DOCKER / f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDAPP_", "COMPOSE_"))}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


@needs_compose
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_docker_compose_config_is_valid(variant):
    result = _compose(VARIANTS[variant], "config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_docker_compose_merge_matches_ours(variant):
    result = _compose(VARIANTS[variant], "config")
    assert result.returncode == 0, result.stderr
    theirs = yaml.safe_load(result.stdout)["services"]
    ours = load(variant)["services"]
    assert sorted(theirs) == sorted(ours)
    for name, svc in ours.items():
        assert [str(a) for a in theirs[name]["entrypoint"]] == [str(a) for a in svc["entrypoint"]]
        assert [str(a) for a in theirs[name].get("command", [])] == [str(a) for a in svc.get("command", [])]
        assert gpu_devices(theirs[name]) == gpu_devices(svc), name
        their_targets = sorted(_volume_target(v) for v in theirs[name]["volumes"])
        assert their_targets == sorted(mounts(svc)), name


# --------------------------------------------------------------------------------------------
# Dockerfile and build context


def _dockerignore_allows(path: str) -> bool:
    """Evaluate /.dockerignore (last matching pattern wins) for a top-level path."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_dockerfile_installs_the_project_as_non_root():
    text = (DOCKER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(\S+)\s+\S+\s*$", text, flags=re.M)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    for needed in ["pyproject.toml", "README.md", *packages]:
        assert needed in copies, f"Dockerfile does not COPY {needed}"
    for src in copies:
        assert _dockerignore_allows(src), f".dockerignore drops {src}, which the Dockerfile copies"
    assert re.search(r"pip install --no-deps \.", text)
    # Build args for other bases, the torch variant, a package mirror and a proxy CA.
    for arg in ("BASE_IMAGE", "TORCH_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "EXTRA_CA_CERT"):
        assert re.search(rf"^ARG {arg}\b", text, flags=re.M), f"no build arg {arg}"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, flags=re.M)
    # The uid/gid args come after every dependency layer (another uid reuses them) and 0 is refused.
    lines = text.splitlines()
    uid_line = next(i for i, l in enumerate(lines) if l.startswith("ARG APP_UID"))
    last_install = max(i for i, l in enumerate(lines) if "pip install" in l)
    assert uid_line > last_install, "ARG APP_UID before a pip install invalidates the dependency layers per uid"
    assert "0:*|*:0)" in text and "refused" in text
    # Dependencies pinned by the constraints file; no Ray in the deployment image.
    assert "-c constraints.txt" in text and "COPY docker/constraints.txt" in text
    assert "flwr[simulation]', 'flwr'" in text
    assert re.search(r"^USER app\s*$", text, flags=re.M)
    assert "FLWR_HOME=" in text
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text
    # No GPU baked in: with the NVIDIA runtime as default it would expose every GPU.
    assert not re.search(r"NVIDIA_VISIBLE_DEVICES\s*=", text)


def test_build_context_excludes_secrets_and_local_state():
    for secret in ["docker/certs/ca.key", "docker/certs/keys/supernode-0", ".venv", ".git",
                   "outputs", "data", ".flwr"]:
        assert not _dockerignore_allows(secret), f"{secret} would be sent to the docker build"


# --------------------------------------------------------------------------------------------
# make_certs.sh

needs_tools = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("ssh-keygen")),
    reason="openssl and ssh-keygen are needed to create certificates",
)


def _make_certs(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(MAKE_CERTS), "--out", str(out), *args],
        capture_output=True, text=True, timeout=120,
    )


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "c"
    result = _make_certs(out, "--host", "gpu-box.example.org", "--host", "10.20.30.40",
                         "--nodes", "3")
    assert result.returncode == 0, result.stderr
    return out


@needs_tools
def test_server_certificate_verifies_and_has_sans(certs):
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem")],
        capture_output=True, text=True,
    )
    assert verify.returncode == 0 and verify.stdout.strip().endswith("OK"), verify
    text = _openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-text")
    san = text.split("X509v3 Subject Alternative Name:")[1].splitlines()[1]
    entries = {e.strip() for e in san.split(",")}
    for expected in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:superlink",
                     "DNS:gpu-box.example.org", "IP Address:10.20.30.40"]:
        assert expected in entries, (expected, entries)
    assert "IP Address:0:0:0:0:0:0:0:1" in entries  # ::1
    assert "TLS Web Server Authentication" in text
    ca_text = _openssl("x509", "-in", str(certs / "ca.crt"), "-noout", "-text")
    assert "CA:TRUE" in ca_text


@needs_tools
def test_supernode_keys_are_ecdsa_384_and_private(certs):
    for i in range(3):
        key = certs / "keys" / f"supernode-{i}"
        fp = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True,
                            capture_output=True, text=True).stdout
        assert fp.startswith("384 ") and fp.rstrip().endswith("(ECDSA)"), fp
        assert key.stat().st_mode & 0o777 == 0o600
    assert not (certs / "keys" / "supernode-3").exists()
    for private in ["ca.key", "server.key"]:
        assert (certs / private).stat().st_mode & 0o777 == 0o600


@needs_tools
def test_existing_ca_is_kept_unless_forced(tmp_path):
    out = tmp_path / "c"
    assert _make_certs(out, "--nodes", "1").returncode == 0
    ca_before = (out / "ca.crt").read_bytes()
    old_server = tmp_path / "old-server.pem"
    shutil.copy(out / "server.pem", old_server)

    again = _make_certs(out, "--nodes", "1")
    assert again.returncode != 0 and "--force" in again.stderr
    assert (out / "ca.crt").read_bytes() == ca_before

    key0 = (out / "keys" / "supernode-0.pub").read_bytes()
    more = _make_certs(out, "--keys-only", "--nodes", "3")
    assert more.returncode == 0, more.stderr
    assert (out / "ca.crt").read_bytes() == ca_before
    assert (out / "keys" / "supernode-0.pub").read_bytes() == key0
    assert (out / "keys" / "supernode-2.pub").is_file()

    forced = _make_certs(out, "--nodes", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "ca.crt").read_bytes() != ca_before
    assert (out / "keys" / "supernode-0.pub").read_bytes() != key0
    assert not (out / "keys" / "supernode-2.pub").exists()
    # The old certificate does not verify against the new CA.
    stale = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(old_server)],
                           capture_output=True, text=True)
    assert stale.returncode != 0


@needs_tools
@pytest.mark.parametrize(
    "bad",
    [["--host", "bad host;rm"], ["--nodes", "0"], ["--nodes", "x"], ["--keys-only"],
     ["--force", "--keys-only"], ["--frobnicate"]],
)
def test_make_certs_rejects_bad_arguments(tmp_path, bad):
    result = _make_certs(tmp_path / "c", *bad)
    assert result.returncode != 0
    assert not (tmp_path / "c" / "ca.key").exists()


# --------------------------------------------------------------------------------------------
# A real SuperLink and SuperNodes with compose.yml's flags and mounts (loopback, no docker)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_args(service: dict, env: dict[str, str], replace: dict[str, str]) -> list[str]:
    """The service's argv with container paths mapped to the host files mounted there."""
    m = {dst: expand(src, env) for dst, (src, _) in mounts(service).items()}
    out = []
    for a in argv(service):
        if a in replace:
            out.append(replace[a])
        elif a in m:
            out.append(str((DOCKER / m[a]).resolve()))
        else:
            out.append(a)
    return out


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
@needs_tools
def test_compose_flags_run_tls_and_supernode_auth_for_real(tmp_path):
    certs = tmp_path / "certs"
    assert _make_certs(certs, "--nodes", "2").returncode == 0
    config = load("2gpu")
    env_files = {"FEDAPP_CERTS_DIR": str(certs)}
    port = _free_port()
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr-home"), FLWR=str(VENV_BIN / "flwr"),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
               FLWR_DISABLE_UPDATE_CHECK="1", FLWR_TELEMETRY_ENABLED="0")
    link_args = _host_args(
        config["services"]["superlink"], env_files,
        {"0.0.0.0": "127.0.0.1", str(SUPERLINK_PORT): str(port),
         "/state/superlink.db": str(tmp_path / "superlink.db")},
    )
    procs = []

    def start(args, log):
        p = subprocess.Popen(args, stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        procs.append(p)
        return p

    def node_args(name: str, extra: list[str]) -> list[str]:
        args = _host_args(supernodes(config)[name], env_files,
                          {f"superlink:{SUPERLINK_PORT}": f"localhost:{port}", "0.0.0.0": "127.0.0.1"})
        return args + ["--port", str(_free_port())] + extra

    try:
        link = start(link_args, "superlink.log")
        reg = subprocess.run(
            ["bash", str(REGISTER), "--certs", str(certs), "--nodes", "1",
             "--address", f"127.0.0.1:{port}", "--connection", "docker", "--wait", "120"],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert reg.returncode == 0, reg.stdout + reg.stderr + (tmp_path / "superlink.log").read_text()
        assert "registered supernode-0" in reg.stdout
        conf = tomllib.loads((tmp_path / "flwr-home" / "config.toml").read_text())
        assert conf["superlink"]["docker"] == {
            "address": f"127.0.0.1:{port}",
            "root-certificates": str(certs.resolve() / "ca.crt"),
        }

        # Registered key: comes online over TLS. Unregistered key (supernode-1): refused.
        start(node_args("supernode-0", []), "supernode-0.log")
        rogue = start(node_args("supernode-1", ["--max-retries", "0"]), "supernode-1.log")
        deadline = time.time() + 120
        online = []
        while time.time() < deadline and not online:
            time.sleep(3)
            out = subprocess.run([str(VENV_BIN / "flwr"), "supernode", "list", "docker",
                                  "--format", "json"], capture_output=True, text=True, env=env)
            nodes = json.loads(out.stdout[out.stdout.index("{"):])["nodes"]
            online = [n for n in nodes if n["status"] == "online"]
        assert len(online) == 1, (nodes, (tmp_path / "supernode-0.log").read_text()[-3000:])
        assert rogue.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in (tmp_path / "supernode-1.log").read_text()
        assert link.poll() is None, (tmp_path / "superlink.log").read_text()[-3000:]
    finally:
        for p in reversed(procs):
            _stop(p)


def test_constraints_pin_every_dependency_without_ray():
    from packaging.requirements import Requirement

    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9._+!-]+", version), f"not pinned: {line!r}"
            pins[name] = version
    assert "ray" not in pins
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not pinned in docker/constraints.txt (run docker/pin_constraints.py)"
        assert requirement.specifier.contains(pins[name]), (name, pins[name], str(requirement.specifier))
    # Every pin is the version this (tested) environment has, as pin_constraints.py writes them.
    import importlib.metadata as metadata

    for name in ("flwr", "torch", "numpy", "scikit-learn"):
        assert pins[name] == metadata.version(name), name
