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
:class:`~fedapp.deployment.LocalDeployment` class.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from fedapp.credentials import make_certs
from fedapp.deployment import (  # noqa: F401 (re-exported)
    DEFAULT_CONNECTION,
    ISOLATION_MODES,
    DeploymentError,
    LocalDeployment,
    ManagedProcess,
    RunOutcome,
)
from fedapp.flwr_runs import format_final, run_command
from fedapp.flwr_runs import json_of as _json_of  # noqa: F401 (re-exported)
from fedapp.overrides import resolve_config
from fedapp.processes import descendants, stop_tree, stop_trees  # noqa: F401 (re-exported)

# Tests, benchmarks and scripts import LocalDeployment, make_certs, descendants, stop_tree(s) and
# _json_of from here.


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
    print(f"[deploy] run {outcome.run_id}: {outcome.status} in {outcome.seconds:.1f} s; "
          f"final: {format_final(outcome.summary)}", flush=True)
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
    """The command line; the exit code (0 done, 1 failed, 2 refused, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.nodes < 1:
        print(f"error: --nodes={args.nodes} is not allowed; it must be >= 1", file=sys.stderr)
        return 2
    return run_command(lambda: deploy(args).run_dir, nothing_running="stopped the SuperLink and SuperNodes")


if __name__ == "__main__":
    sys.exit(main())
