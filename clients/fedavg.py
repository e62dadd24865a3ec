"""FedAvg client (McMahan et al., 2017): ``local-epochs`` of local training from the global model,
then the whole shared model is sent back. Multi-label data uses BCE-with-logits, single-label data
cross-entropy; the model is backbone -> global average pooling -> linear classifier.
"""

from clients.base import BaseClient


class FedAvgClient(BaseClient):
    """Plain local training; everything the model has travels."""
