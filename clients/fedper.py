"""FedPer client (Arivazhagan et al., 2019, "Federated Learning with Personalization Layers"):
body and head are trained together on local data; only the body travels. The head
(``classifier``) is a personalization layer kept in ``context.state`` by the base client.
"""

from __future__ import annotations

from torch import nn

from clients.base import BaseClient
from fedapp.params import shared_keys
from fedapp.pfl import HEAD_PREFIX


class FedPerClient(BaseClient):
    """Joint local training of body + personal head; the head stays local."""

    @classmethod
    def shared_keys_of(cls, model: nn.Module) -> list[str]:
        return shared_keys(model, exclude_prefixes=[HEAD_PREFIX])
