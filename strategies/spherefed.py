"""SphereFed (Dong et al., ECCV 2022, "SphereFed: Hyperspherical Federated Learning").

Clients train against a fixed orthonormal classifier on the unit hypersphere
(:mod:`clients.spherefed`); the server averages the backbones (FedAvg). The classifier is then
calibrated in closed form from the clients' feature statistics of the global feature extractor:

    W* = (sum_k Z_k^T Z_k + lambda I)^{-1} sum_k Z_k^T Y_k        (lambda = ``spherefed-ridge``)

with Z_k the normalised features of client k and Y_k its one-hot / multi-hot targets; the
calibrated network reports logit = s * (z^T W* - 1/2) (:class:`fedapp.models.sphere.CalibratedSphereNet`).
The clients only ever train with the fixed classifier; W* is used for evaluation.

When: the statistics travel in Flower's federated-evaluation step, which runs after the round's
aggregation, so they describe exactly the model being evaluated. ``spherefed-calibrate-every``
= k calibrates at every k-th round and always after the last one; 0 only after the last round (the
paper's "after federated training"). Calibrated metrics are recorded as ``test_*``/``val_*`` (the
numbers in summary.json, best round chosen on validation among calibrated rounds); the fixed
classifier's metrics are recorded every round as ``uncalibrated_test_*``/``uncalibrated_val_*``.

Bytes of one calibration (counted in the round's ``bytes_sent``/``bytes_received`` and also as
``calibration_bytes_*``): the global model once more to each client, and d*d + d*C float64 values
back from each (d = 64, C = 10: 37,888 bytes per client).
"""

from __future__ import annotations

from logging import WARNING

from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    Parameters,
    Scalar,
    log,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from torch import nn

from clients.spherefed import CALIBRATE_KEY, CROSS_KEY, GRAM_KEY, SphereFedClient
from fedapp.algorithm import Algorithm
from fedapp.models.backbones import build_backbone
from fedapp.models.sphere import (
    CalibratedSphereNet,
    SphereNet,
    decode_matrix,
    ridge_classifier,
)
from fedapp.options import Option
from fedapp.params import payload_bytes
from strategies.base import FederatedStrategy, ServerSetup


class SphereFedStrategy(FederatedStrategy):
    """FedAvg of the backbone plus closed-form classifier calibration in the evaluation step."""

    def __init__(self, setup: ServerSetup) -> None:
        # Federated evaluation carries the calibration statistics, so it must reach every client.
        super().__init__(setup, fraction_evaluate=1.0)
        self.multilabel = setup.data.bundle.task == "multilabel"
        self.every = self.config.spherefed_calibrate_every
        self.ridge = self.config.spherefed_ridge
        self.shapes = {
            GRAM_KEY: (setup.model.feature_dim, setup.model.feature_dim),
            CROSS_KEY: (setup.model.feature_dim, setup.model.num_classes),
        }

    def is_calibration_round(self, server_round: int) -> bool:
        return server_round == self.config.num_server_rounds or (self.every > 0 and server_round % self.every == 0)

    # -------------------------------------------------------- evaluation step
    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Metrics of the fixed classifier (``uncalibrated_*``); calibrated ones follow in
        :meth:`aggregate_evaluate` on calibration rounds."""
        if server_round == 0:
            return None
        metrics = self.server_metrics(self.global_model(parameters_to_ndarrays(parameters)))
        self.recorder.add(server_round, **{f"uncalibrated_{k}": v for k, v in metrics.items()})
        if self.multilabel and not self.is_calibration_round(server_round):
            self.end_round(server_round)  # no federated evaluation this round
        return None

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        calibrate = self.is_calibration_round(server_round)
        if self.multilabel and not calibrate:
            return []
        instructions = super().configure_evaluate(server_round, parameters, client_manager)
        for _, ins in instructions:
            ins.config[CALIBRATE_KEY] = calibrate
        if calibrate:  # the model goes out once more to every client: part of the algorithm's traffic
            sent = payload_bytes(parameters_to_ndarrays(parameters)) * len(instructions)
            self.recorder.increment(server_round, bytes_sent=sent, calibration_bytes_sent=sent)
        return instructions

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        if self.is_calibration_round(server_round):
            self.calibrate(server_round, results)
        if not self.multilabel:  # logs failures, records PM, ends the round
            return super().aggregate_evaluate(server_round, results, failures)  # PM, then the round ends
        for failure in failures:
            log(WARNING, "round %s: a client failed to evaluate: %s", server_round, self.describe(failure))
        self.end_round(server_round)
        return None, {}

    def calibrate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]]) -> None:
        """Solve for W* from the valid statistics and record the calibrated model's metrics."""
        grams, crosses, received, rejected = [], [], 0, 0
        for proxy, res in self.in_partition_order(results):
            try:
                gram = decode_matrix(res.metrics[GRAM_KEY], self.shapes[GRAM_KEY])
                cross = decode_matrix(res.metrics[CROSS_KEY], self.shapes[CROSS_KEY])
            except (KeyError, ValueError) as error:
                log(WARNING, "round %s: rejected the calibration statistics of node %s: %s", server_round, proxy.cid, error)
                rejected += 1
                continue
            grams.append(gram)
            crosses.append(cross)
            received += len(res.metrics[GRAM_KEY]) + len(res.metrics[CROSS_KEY])
        self.recorder.increment(server_round, bytes_received=received, calibration_bytes_received=received)
        self.recorder.add(server_round, calibration_clients=len(grams), calibration_rejected=rejected)
        if not grams:
            log(WARNING, "round %s: no valid calibration statistics; no calibrated metrics this round", server_round)
            return
        calibrated = ridge_classifier(grams, crosses, self.ridge)
        model = CalibratedSphereNet(self.global_model(self.current), calibrated)
        self.recorder.add(server_round, **self.server_metrics(model))


def sphere_model(config, bundle) -> nn.Module:
    """Backbone with normalised features against a fixed orthonormal classifier from ``seed``."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    return SphereNet(backbone, backbone.out_dim, bundle.num_classes, config.spherefed_scale, config.seed)


ALGORITHM = Algorithm(
    name="spherefed", display_name="SphereFed", task="any", strategy=SphereFedStrategy, client=SphereFedClient,
    model=sphere_model,
    options=(
        Option("spherefed-scale", 16.0, "SphereFed: s in logit_c = s * cos(z, w_c)", "a number > 0",
               lambda v: v > 0),
        Option("spherefed-ridge", 0.01, "SphereFed: lambda of the closed-form calibration",
               "a number >= 0 (> 0 keeps the system solvable)", lambda v: v >= 0),
        Option("spherefed-calibrate-every", 1, "SphereFed: calibrate every N rounds and after the last; 0 = last only",
               "an integer >= 0 (0: calibrate only after the last round)", lambda v: v >= 0),
    ),
)
