"""The secrets of a deployment: TLS certificates, SuperNode keys, SuperExec secrets, the CLI's connection.

- :func:`make_certs`: a CA, the SuperLink's certificate and SuperNode key pairs (``docker/make_certs.sh``),
- :func:`write_secret`: a random per-host secret that SuperExec requests are authenticated with,
- :func:`connection_toml`: the ``[superlink.<name>]`` entry of the ``flwr`` CLI's ``config.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Sequence

from fedapp.flwr_runs import RunError
from fedapp.results import PROJECT_ROOT

MAKE_CERTS = PROJECT_ROOT / "docker" / "make_certs.sh"
SERVER_FILES = ("ca.crt", "server.pem", "server.key")  # what a TLS SuperLink needs


def make_certs(out: Path, nodes: int, hosts: Sequence[str] = ()) -> Path:
    """CA, SuperLink certificate and ``nodes`` SuperNode key pairs via ``docker/make_certs.sh``."""
    command = ["bash", str(MAKE_CERTS), "--out", str(out), "--nodes", str(nodes)]
    for host in hosts:
        command += ["--host", host]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RunError(f"docker/make_certs.sh failed ({result.returncode}): {result.stderr.strip()}")
    return out


def missing_server_file(certs: Path) -> str | None:
    """The first of ca.crt, server.pem, server.key that ``certs`` lacks, or None."""
    return next((name for name in SERVER_FILES if not (certs / name).is_file()), None)


def superlink_tls_args(certs: Path) -> list[str]:
    """``flower-superlink`` flags for TLS with ``certs`` and SuperNode authentication."""
    return ["--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
            "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth"]


def supernode_key(certs: Path, index: int) -> Path:
    """The private key of SuperNode ``index`` (its public key: the same path with ``.pub``)."""
    return certs / "keys" / f"supernode-{index}"


def supernode_tls_args(certs: Path, key_index: int, with_ca: bool = True) -> list[str]:
    """``flower-supernode`` flags for TLS with the CA (unless not ``with_ca``) and SuperNode key ``key_index``."""
    ca = ["--root-certificates", str(certs / "ca.crt")] if with_ca else []
    return ca + ["--auth-supernode-private-key", str(supernode_key(certs, key_index))]


def write_secret(path: Path) -> Path:
    """A random shared secret at ``path`` (mode 0600, folder 0700), kept if it exists already."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32).hex().encode())
    return path


def connection_toml(name: str, address: str, ca_cert: Path | None) -> str:
    """``config.toml`` for the CLI with ``name`` as default connection: TLS with ``ca_cert``, else insecure."""
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f'address = "{address}"']
    if ca_cert is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(ca_cert))}")
    return "\n".join(lines) + "\n"
