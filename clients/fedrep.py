"""FedRep client (Collins et al., 2021, "Exploiting Shared Representations for Personalized
Federated Learning"). Each round, starting from the received global body phi^t and the client's
own head h_k:

    1. h_k <- argmin_h  L_k(h, phi^t)          ``fedrep-head-epochs`` epochs, body frozen
    2. phi_k <- argmin_phi L_k(h_k, phi)       ``local-epochs`` epochs, head frozen

Only phi_k travels (the server averages it); h_k stays in ``context.state``. The personalized
model is the global body + h_k.
"""

from __future__ import annotations

from typing import Any

from clients.base import BaseClient
from fedapp.loops import train_epochs
from fedapp.pfl import HEAD_PREFIX, train_only


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


class FedRepClient(BaseClient):
    """Head epochs with the body frozen, then body epochs with the head frozen."""

    def local_train(self, config: dict[str, Any]) -> dict[str, float]:
        loader = self.train_loader(config)
        with train_only(self.model, is_head) as head:
            head_metrics = train_epochs(
                self.model, loader, self.make_optimizer(head), self.loss,
                self.config.fedrep_head_epochs, self.device, options=self.train_options,
            )
        with train_only(self.model, lambda name: not is_head(name)) as body:
            body_metrics = train_epochs(
                self.model, loader, self.make_optimizer(body), self.loss,
                self.config.local_epochs, self.device, options=self.train_options,
            )
        return {"head_loss": head_metrics["loss"], "loss": body_metrics["loss"]}
