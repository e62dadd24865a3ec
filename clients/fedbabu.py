"""FedBABU client (Oh et al., 2022, "FedBABU: Toward Enhanced Representation for Federated Image
Classification").

Federated training updates only the body; the head is a random linear layer that is never
updated, identical on every client and on the server because it is drawn from the run seed
(:func:`fedapp.pfl.seeded_linear_`), so it never travels:

    phi_k <- argmin_phi L_k(h_fixed, phi)       (``local-epochs``; h_fixed has no gradient)

Personalization (evaluation only): each client fine-tunes a copy of the received global model
on its training data for ``finetune-epochs`` epochs (the whole model, as in the paper's main
results, or the head only with ``fedbabu-finetune-body=false``) and evaluates that copy. The
global model (GM) is the global body + the fixed head.
"""

from __future__ import annotations

import copy

from torch import nn

from clients.base import BaseClient
from fedapp.loops import train_epochs
from fedapp.pfl import HEAD_PREFIX, train_only


class FedBABUClient(BaseClient):
    """Body-only training against a fixed seeded head; fine-tuning before local evaluation."""

    def personalized_model(self) -> nn.Module:
        """A fine-tuned copy of the global model (the client's own model is left as received)."""
        model = copy.deepcopy(self.model)
        finetune_body = self.config.fedbabu_finetune_body
        with train_only(model, lambda name: finetune_body or name.startswith(HEAD_PREFIX)) as params:
            train_epochs(
                model, self.train_loader({}), self.make_optimizer(params), self.loss,
                self.config.finetune_epochs, self.device, options=self.train_options,
            )
        return model
