"""ServerApp: run config -> validated config -> model + registered strategy -> rounds -> run directory."""

from __future__ import annotations

import os
import tempfile
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import Context
from flwr.common import log
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import SimpleClientManager

from fedapp.checkpoint import CheckpointError, open_for_resume
from fedapp.config import RunConfig
from fedapp.data import hold_out
from fedapp.faults import ENV_VAR as FAULTS_ENV_VAR
from fedapp.faults import faults_from_environment
from fedapp.loops import resolve_device, set_determinism
from fedapp.params import get_arrays
from fedapp.registry import get_algorithm
from fedapp.results import RunRecorder, resolve_run_dir
from fedapp.server_loop import FederationServer
from strategies.base import ServerSetup
from strategies.screening import check_update


def build_server_setup(config: RunConfig, *, scratch_dir: Path | None = None) -> ServerSetup:
    """Everything a strategy needs: evaluation data, initial model, device and the run recorder.

    Everything that can refuse the run (device, algorithm/dataset pairing, the checkpoint to resume)
    is checked before the run directory is touched. With ``scratch_dir`` (see :func:`preflight`)
    the run directory is not touched at all: the recorder writes nothing and points at
    ``scratch_dir`` (where a strategy may write what it writes when built), the model stays on the CPU.
    """
    dry = scratch_dir is not None
    algorithm = get_algorithm(config.algorithm)
    data = hold_out(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    set_determinism(config.deterministic, device)
    model = algorithm.build_model(config, data.bundle)
    if not dry:
        model = model.to(device)
    keys = algorithm.shared_keys(model)
    # resume=<run dir> continues that run in its own directory (checked before anything is written).
    run_dir = resolve_run_dir(config.resume or config.output_dir, config.algorithm, config.dataset)
    resolved = dict(config.to_kebab(), **{"output-dir": str(run_dir)})
    checkpoint = open_for_resume(run_dir, resolved) if config.resume else None
    if checkpoint is not None:
        reason = check_update(checkpoint.parameters, get_arrays(model, keys))
        if reason is not None:
            raise CheckpointError(f"{checkpoint.path}: its parameters do not fit this model ({reason}); it "
                                  "cannot be resumed")
    recorder = RunRecorder(scratch_dir if dry else run_dir, resolved, data.bundle.task, config.num_server_rounds,
                           resume_rows=checkpoint.rows if checkpoint else None, create=not dry)
    # A dry setup stays on the CPU: a check must not hold GPU memory for the rest of the run.
    return ServerSetup(config, data, model, keys, torch.device("cpu") if dry else device, recorder,
                       checkpoint=checkpoint)


def preflight(config: RunConfig) -> None:
    """Refuse now what the ServerApp would refuse before round 1, writing nothing.

    Builds the model and the strategy as :func:`server_fn` does (device string, algorithm/dataset
    pairing, each strategy's own checks) and, when resuming, loads the checkpoint into the strategy
    (readable, same config, parameters finite and shaped like the model, the strategy's own state).
    """
    faults_from_environment()  # a malformed FEDAPP_FAULT_INJECTION is refused now, not by every client
    with tempfile.TemporaryDirectory(prefix="fedapp-preflight-") as scratch:
        setup = build_server_setup(config, scratch_dir=Path(scratch))
        strategy = get_algorithm(config.algorithm).strategy(setup)
        if setup.checkpoint is not None:
            strategy.initialize_parameters(SimpleClientManager())


def server_fn(context: Context) -> ServerAppComponents:
    config = RunConfig.from_run_config(context.run_config)
    setup = build_server_setup(config)
    log(INFO, "run directory: %s", setup.recorder.run_dir)
    if faults_from_environment():
        # Seen by the server's process; ClientApps on other machines read their own environment.
        spec = os.environ[FAULTS_ENV_VAR]
        log(WARNING, "%s=%r is set: the clients it names fail on purpose (a testing aid)", FAULTS_ENV_VAR, spec)
        setup.recorder.notes["fault_injection"] = spec
    strategy = get_algorithm(config.algorithm).strategy(setup)
    # FederationServer: Flower's loop plus resume at the checkpoint round, round retries, named failures.
    server = FederationServer(client_manager=SimpleClientManager(), strategy=strategy)
    return ServerAppComponents(server=server, config=ServerConfig(num_rounds=config.num_server_rounds))


app = ServerApp(server_fn=server_fn)
