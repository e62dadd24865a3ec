"""FedBN client (Li et al., 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization"): local training as FedAvg, but every BatchNorm layer (weight, bias, running mean
and variance) stays on the client. Those tensors are simply not shared keys, so the base client
keeps them in ``context.state`` between rounds and the personalized model is the global layers +
the client's own BN layers.
"""

from __future__ import annotations

from clients.base import BaseClient


class FedBNClient(BaseClient):
    """FedAvg training; BN layers never leave the client."""
