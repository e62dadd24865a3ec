"""FedPer client (Arivazhagan et al., 2019, "Federated Learning with Personalization Layers"):
body and head are trained together on local data; only the body travels. The head
(``classifier``) is a personalization layer kept in ``context.state`` by the base client.
"""

from __future__ import annotations

from clients.base import BaseClient


class FedPerClient(BaseClient):
    """Joint local training of body + personal head; the head stays local."""
