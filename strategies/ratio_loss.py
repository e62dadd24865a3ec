"""Ratio Loss (Wang et al., 2021, "Addressing Class Imbalance in Federated Learning").

Each round, before training, the server's monitor feeds ``ratio-loss-aux-per-class`` auxiliary
samples of every class (taken from the server's held-out validation split, never the test set)
to the current global model and compares the output-layer gradients they cause
(:func:`fedapp.pfl.class_ratio_estimates`):

    Ra_p = | sum_d G_p[p, d] | / | mean_{q != p} sum_d G_q[p, d] |,   G_q = dCE(aux_q)/dW_out

It sends every client the class weights

    w_c = alpha + beta * Ra_c          (``ratio-loss-alpha``, ``ratio-loss-beta``)

(C float64 values in the fit config, 8*C bytes per client, outside the model payload that
``bytes_sent`` counts), and the clients minimise the w-weighted cross-entropy. Aggregation is
FedAvg. A class with no auxiliary sample at the server gets the largest Ra of the others.
"""

from __future__ import annotations

import numpy as np
from flwr.common import Scalar

from clients.ratio_loss import WEIGHTS_KEY, RatioLossClient, encode_weights
from fedapp.algorithm import Algorithm
from fedapp.options import Option, require
from fedapp.pfl import auxiliary_batches, class_ratio_estimates, ratio_loss_weights
from strategies.base import FederatedStrategy, ServerSetup


class RatioLossStrategy(FederatedStrategy):
    """FedAvg plus the server-side class-composition monitor that sets the clients' loss weights."""

    def __init__(self, setup: ServerSetup, **fedavg_kwargs) -> None:
        super().__init__(setup, **fedavg_kwargs)
        bundle = setup.data.bundle
        validation = setup.data.validation
        self.aux = auxiliary_batches(
            validation, validation.labels, bundle.num_classes, self.config.ratio_loss_aux_per_class
        )
        if sum(batch is not None for batch in self.aux) < 2:
            raise ValueError(
                f"{ALGORITHM.name} needs validation samples of >= 2 classes for its monitor; val-fraction="
                f"{self.config.val_fraction} leaves {sum(b is not None for b in self.aux)}: raise val-fraction"
            )
        self._weights: tuple[int, bytes] | None = None

    def class_weights(self) -> np.ndarray:
        """The monitor's weights for the current global model."""
        model = self.global_model(self.current)
        ra = class_ratio_estimates(model, model.classifier.weight, self.aux)
        return ratio_loss_weights(ra, self.config.ratio_loss_alpha, self.config.ratio_loss_beta)

    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        # Computed once per round, on the global model the round starts from (the evaluate
        # instruction of the same round reuses it).
        if self._weights is None or self._weights[0] != server_round:
            weights = self.class_weights()
            self.recorder.add(
                server_round, ratio_loss_weight_min=float(weights.min()), ratio_loss_weight_max=float(weights.max())
            )
            self._weights = (server_round, encode_weights(weights))
        return {**super().fit_config(server_round), WEIGHTS_KEY: self._weights[1]}


def check_class_weights(config) -> None:
    """The class weights alpha + beta * Ra_c must be positive."""
    require(config.ratio_loss_alpha + config.ratio_loss_beta > 0, "ratio-loss-beta", config.ratio_loss_beta,
            "a number > 0 when ratio-loss-alpha is 0 (the class weights must be positive)")


ALGORITHM = Algorithm(
    name="ratio-loss", display_name="Ratio Loss", task="singlelabel", strategy=RatioLossStrategy,
    client=RatioLossClient, check=check_class_weights,
    options=(
        Option("ratio-loss-alpha", 1.0, "Ratio Loss: class weight w_c = alpha + beta * Ra_c", "a number >= 0",
               lambda v: v >= 0),
        Option("ratio-loss-beta", 0.1, "Ratio Loss: see ratio-loss-alpha", "a number >= 0", lambda v: v >= 0),
        Option("ratio-loss-aux-per-class", 8, "Ratio Loss: server's auxiliary samples per class (validation split)",
               "an integer >= 1", lambda v: v >= 1),
    ),
)
