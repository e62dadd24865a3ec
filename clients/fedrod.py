"""FedRoD client (Chen & Chao, 2022, "On Bridging Generic and Personalized Federated Learning for
Image Classification").

One body f_theta, a generic head g_psi (shared) and a personal head p_phi_k (local):

    generic logits      z_G = g_psi(f_theta(x))
    personalized logits z_P = z_G + p_phi_k(f_theta(x))

    L_k = BSM(z_G, y; n_k) + CE(z_G.detach() + p_phi_k(f_theta(x).detach()), y)

BSM is the balanced softmax with the client's class counts n_k (:func:`fedapp.pfl.balanced_softmax_loss`),
FedRoD's balanced risk for the generic model; the personal head is trained with plain
cross-entropy on the personalized logits and does not move the body or the generic head (the
detaches). theta and psi travel; phi_k stays in ``context.state``. GM: z_G; PM: z_P.
"""

from __future__ import annotations

import torch
from torch import nn

from clients.base import BaseClient
from fedapp.data.base import class_counts
from fedapp.models.pfl_nets import PersonalizedView
from fedapp.pfl import balanced_softmax_loss

PERSONAL_PREFIX = "personal_head."


class FedRoDClient(BaseClient):
    """Balanced-softmax generic head (shared) + cross-entropy personal head (local)."""

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        counts = class_counts(self.train_set.labels, self.bundle.num_classes)
        generic, personalized = model.dual_logits(images)
        generic_loss = balanced_softmax_loss(generic, targets, counts)
        personal_loss = nn.functional.cross_entropy(personalized, targets)
        return generic_loss + personal_loss, {
            "loss": float(generic_loss.detach()), "personal_loss": float(personal_loss.detach()),
        }

    def personalized_model(self) -> nn.Module:
        return PersonalizedView(self.model)
