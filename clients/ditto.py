"""Ditto client (Li et al., 2021, "Ditto: Fair and Robust Federated Learning through
Personalization").

Each round, from the received global model w^t:

    w_k   <- ``local-epochs`` of the plain local objective F_k, starting at w^t   (sent; FedAvg)
    v_k   <- ``local-epochs`` of  F_k(v) + (lambda / 2) ||v - w^t||^2,  starting at the client's
             previous v_k (w^t in its first round)                           (kept; never sent)

with lambda = ``ditto-lambda``. v_k (all its tensors, BN statistics included) lives in
``context.state``; the personalized model (PM) is v_k, the global model (GM) is the FedAvg of w_k.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from flwr.app import ArrayRecord
from torch import nn

from clients.base import BaseClient
from fedapp.loops import train_epochs
from fedapp.params import proximal_term

PERSONAL_MODEL_KEY = "ditto-personal-model"


class DittoClient(BaseClient):
    """FedAvg on the global model plus a proximally regularized personal model."""

    def load_private_arrays(self) -> None:
        self.personal: nn.Module | None = None
        if PERSONAL_MODEL_KEY in self.state:
            self.personal = copy.deepcopy(self.model)
            self.personal.load_state_dict(self.state[PERSONAL_MODEL_KEY].to_torch_state_dict())

    def save_state(self) -> None:
        super().save_state()
        if self.personal is not None:
            state = {k: v.detach().cpu() for k, v in self.personal.state_dict().items()}
            self.state[PERSONAL_MODEL_KEY] = ArrayRecord(state)

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        if self.personal is None:
            self.personal = copy.deepcopy(self.model)
        anchor = [p.detach().clone() for p in self.model.parameters()]  # w^t, before any local step
        global_metrics = super().local_train(config)
        personal_params = list(self.personal.parameters())
        lam = self.config.ditto_lambda

        def personal_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
            task, terms = self.loss(model, images, targets)
            prox = 0.5 * lam * proximal_term(personal_params, anchor)
            return task + prox, {"personal_loss": terms["loss"], "proximal": float(prox.detach())}

        personal_metrics = train_epochs(
            self.personal, self.train_loader(config), self.make_optimizer(personal_params), personal_loss,
            self.config.local_epochs, self.device, options=self.train_options,
        )
        return {**global_metrics, **personal_metrics}

    def personalized_model(self) -> nn.Module:
        return self.personal if self.personal is not None else self.model
