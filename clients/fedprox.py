"""FedProx client (Li et al., 2020, "Federated Optimization in Heterogeneous Networks").

Local objective of client k in round t, with w^t the global model it received:

    h_k(w) = F_k(w) + (mu / 2) * ||w - w^t||^2

F_k is the task loss (BCE-with-logits for multi-label data, cross-entropy for single-label data),
so the same client serves ml-digits and lt-digits. The proximal term covers the trainable shared
parameters (BatchNorm running statistics are buffers, not optimised, so they carry no term).
``mu`` comes from the server (Flower's ``FedProx`` strategy sends it as ``proximal_mu``); the
run's optimizer (AdamW by default) minimises h_k, as the FedNCAlign-ML paper runs every baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clients.base import BaseClient
from fedapp.params import proximal_term
from fedapp.payload import trainable_keys


class FedProxClient(BaseClient):
    """Local training on the task loss plus the proximal term to the received global model."""

    def receive(self, parameters: list[np.ndarray], config: dict[str, Any]) -> None:
        super().receive(parameters, config)
        named = dict(self.model.named_parameters())
        self.proximal_params = [named[name] for name in trainable_keys(self.model, self.keys)]
        self.anchors = [p.detach().clone() for p in self.proximal_params]

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        # The server's mu (Flower's FedProx config key) is the one this round uses.
        self.mu = float(config.get("proximal_mu", self.config.mu))
        return super().local_train(config)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        task, terms = super().loss(model, images, targets)
        proximal = proximal_term(self.proximal_params, self.anchors)
        terms["proximal"] = float(proximal.detach())
        return task + 0.5 * self.mu * proximal, terms
