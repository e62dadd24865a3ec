"""Ratio Loss client (Wang et al., 2021, "Addressing Class Imbalance in Federated Learning").

The server's monitor estimates, from the current global model and a few auxiliary samples per
class, how under-represented each class is (``Ra_c``, see :func:`fedapp.pfl.class_ratio_estimates`)
and sends the class weights w_c = alpha + beta * Ra_c with the fit instruction (key
``ratio-loss-weights``: C float64 values as bytes). The client trains the whole model with the
re-weighted cross-entropy

    L_k = sum_i w_{y_i} CE(f(x_i), y_i) / sum_i w_{y_i}

and sends the whole model back (FedAvg). There is no personalized model: PM is the global model
on the client's local test set, as in the FedLoGe authors' Ratio Loss baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clients.base import BaseClient

WEIGHTS_KEY = "ratio-loss-weights"


def decode_weights(config: dict[str, Any], num_classes: int) -> torch.Tensor:
    """The class weights the server sent in ``config`` (an error if absent or malformed)."""
    if WEIGHTS_KEY not in config:
        raise ValueError(f"the fit config lacks {WEIGHTS_KEY!r}; run this client with the Ratio Loss strategy")
    weights = np.frombuffer(config[WEIGHTS_KEY], dtype=np.float64).copy()
    if weights.shape != (num_classes,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"{WEIGHTS_KEY} must be {num_classes} finite positive values, got {weights}")
    return torch.as_tensor(weights, dtype=torch.float32)


def encode_weights(weights: np.ndarray) -> bytes:
    return np.asarray(weights, dtype=np.float64).tobytes()


class RatioLossClient(BaseClient):
    """Class-weighted cross-entropy with the server's monitored weights."""

    class_weights: torch.Tensor | None = None

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        self.class_weights = decode_weights(config, self.bundle.num_classes).to(self.device)
        return super().local_train(config)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        if self.class_weights is None:
            raise RuntimeError("RatioLossClient.loss needs the server's class weights (set by local_train)")
        loss = nn.functional.cross_entropy(model(images), targets, weight=self.class_weights)
        return loss, {"loss": float(loss.detach())}
