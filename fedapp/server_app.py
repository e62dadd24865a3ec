"""ServerApp: run config -> validated config -> model + registered strategy -> rounds -> run directory."""

from __future__ import annotations

from logging import INFO

import torch
from flwr.app import Context
from flwr.common import log
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import SimpleClientManager

from fedapp.checkpoint import open_for_resume
from fedapp.config import RunConfig
from fedapp.data import hold_out
from fedapp.loops import resolve_device, set_determinism
from fedapp.registry import get_algorithm
from fedapp.results import RunRecorder, resolve_run_dir
from fedapp.server_loop import FederationServer
from strategies.base import ServerSetup


def build_server_setup(config: RunConfig) -> ServerSetup:
    """Everything a strategy needs: evaluation data, initial model, device and the run recorder."""
    algorithm = get_algorithm(config.algorithm)
    data = hold_out(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    set_determinism(config.deterministic, device)
    model = algorithm.client.build_model(config, data.bundle).to(device)
    # resume=<run dir> continues that run in its own directory (checked before anything is written).
    run_dir = resolve_run_dir(config.resume or config.output_dir, config.algorithm, config.dataset)
    resolved = dict(config.to_kebab(), **{"output-dir": str(run_dir)})
    checkpoint = open_for_resume(run_dir, resolved) if config.resume else None
    recorder = RunRecorder(run_dir, resolved, data.bundle.task, config.num_server_rounds,
                           resume_rows=checkpoint.rows if checkpoint else None)
    return ServerSetup(config, data, model, algorithm.client.shared_keys_of(model), device, recorder,
                       checkpoint=checkpoint)


def server_fn(context: Context) -> ServerAppComponents:
    config = RunConfig.from_run_config(context.run_config)
    setup = build_server_setup(config)
    log(INFO, "run directory: %s", setup.recorder.run_dir)
    strategy = get_algorithm(config.algorithm).strategy(setup)
    # FederationServer: Flower's loop plus resume at the checkpoint round, round retries, named failures.
    server = FederationServer(client_manager=SimpleClientManager(), strategy=strategy)
    return ServerAppComponents(server=server, config=ServerConfig(num_rounds=config.num_server_rounds))


app = ServerApp(server_fn=server_fn)
