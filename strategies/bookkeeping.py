"""Round bookkeeping: means of the clients' metrics, per-client scores and bytes on the wire."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from flwr.common import FitIns, Scalar, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy
from torch import nn

from fedapp.data.base import DatasetBundle
from fedapp.loops import predict
from fedapp.metrics import multilabel_metrics
from fedapp.params import payload_bytes
from fedapp.protocol import BOOKKEEPING_METRICS


def weighted_means(pairs: list[tuple[int, dict[str, Scalar]]]) -> dict[str, float]:
    """Example-weighted mean of each numeric metric the clients returned (bookkeeping keys excluded)."""
    total = sum(n for n, _ in pairs)
    if total == 0:
        return {}
    names = sorted({k for _, m in pairs for k, v in m.items()
                    if isinstance(v, (int, float)) and k not in BOOKKEEPING_METRICS})
    return {name: float(sum(n * float(m.get(name, 0.0)) for n, m in pairs) / total) for name in names}


def client_mean(values: Sequence[float]) -> float:
    """The unweighted mean of per-client values (PM and its variants), exact via math.fsum so that
    it does not depend on the order in which the replies arrived."""
    return math.fsum(values) / len(values)


def sent_bytes(instructions: list[tuple[ClientProxy, FitIns]]) -> int:
    """Payload bytes of all instructions (each distinct Parameters object is decoded once)."""
    sizes: dict[int, int] = {}
    total = 0
    for _, ins in instructions:
        key = id(ins.parameters)
        if key not in sizes:
            sizes[key] = payload_bytes(parameters_to_ndarrays(ins.parameters))
        total += sizes[key]
    return total


def per_client_multilabel_scores(model: nn.Module, bundle: DatasetBundle, counts: np.ndarray, device: torch.device,
                                 batch_size: int) -> dict[int, dict[str, float]]:
    """Per client: macro-F1 / macro-AUC of ``model`` on the global test set over the classes it trains on.

    Multi-label data have no local test sets; each client is scored on its columns of the test
    labels (``counts[k] > 0``), which shows who the global model leaves behind.
    """
    targets, scores = predict(model, bundle.test, bundle.task, device, batch_size)
    per_client: dict[int, dict[str, float]] = {}
    for partition, row in enumerate(counts):
        classes = np.flatnonzero(row > 0)
        if classes.size == 0:
            continue
        values = multilabel_metrics(targets[:, classes], scores[:, classes])
        per_client[partition] = {"macro_f1": values["macro_f1"], "macro_auc": values["macro_auc"]}
    return per_client
