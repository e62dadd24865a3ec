"""FedLoGe's network: one backbone, three linear heads over its pooled features.

Xiao et al., "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data"
(ICLR 2024), Sec. 3 and Algorithm 1. With h = f(x; theta) the pooled backbone features (dim d):

    fixed classifier   z_fixed = h @ W          W (d x C): SSE-C (Eq. 3-5) or the dense ETF, frozen
    global aux. head   z_psi   = h @ psi^T      psi (C x d): shared, aggregated by the server
    local head         z_phi   = h @ phi_k^T    phi_k (C x d): private, never leaves client k

``W`` is a non-persistent buffer rebuilt from the seed on every side (never in ``state_dict``, so it
never travels and never enters ``context.state``); psi and phi_k are ``nn.Linear`` without bias:
Eq. 6-7 define the realigned heads by their class vectors alone, and a bias would carry back the
class prior that GA-FR removes and that LA-FR takes from phi_k's norms.

The per-batch objective of Algorithm 1's CLIENTUPDATE (:func:`fedloge_loss`),

    L = CE(h @ W, y) + CE(psi(sg(h)), y) + CE(phi_k(sg(h)), y)        sg = stop-gradient,

trains theta against the fixed W only (line 4) and psi, phi_k on the same, now constant, features
(line 5). The three parameter sets are disjoint and the features are detached for the heads, so one
backward pass of the sum and one step of a per-parameter optimizer (SGD, Adam, AdamW) give exactly
the three separate updates of Algorithm 1, at the cost of one optimizer step instead of three.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedapp.models.etf import simplex_etf
from fedapp.models.feature_realignment import ga_fr, la_fr
from fedapp.models.sse_c import build_sse_c, classifier_geometry, sse_c_checksum
from fedapp.pfl import seeded_linear_

FixedKind = Literal["sse-c", "etf"]
GLOBAL_HEAD = "global_head."  # psi: travels
LOCAL_HEAD = "local_head."  # phi_k: stays on the client
# Fit metrics of a FedLoGe client (read by strategies.fedloge): the checksum of the W it rebuilt
# from the seed, and its training samples per class (for the class-wise aggregation of psi).
CHECKSUM_METRIC = "fixed-classifier-checksum"
CLASS_COUNTS_METRIC = "class-counts"


def encode_counts(counts: np.ndarray) -> bytes:
    """Per-class sample counts as a fit-metric value (little-endian int64 bytes)."""
    return np.asarray(counts, dtype="<i8").tobytes()


def decode_counts(value: object, num_classes: int) -> np.ndarray:
    """The counts :func:`encode_counts` wrote; ValueError (with the reason) if malformed."""
    if not isinstance(value, bytes) or len(value) != 8 * num_classes:
        raise ValueError(f"{CLASS_COUNTS_METRIC} must be {num_classes} int64 values as bytes")
    counts = np.frombuffer(value, dtype="<i8").astype(np.int64)
    if np.any(counts < 0):
        raise ValueError(f"{CLASS_COUNTS_METRIC} has negative counts")
    return counts


@dataclass(frozen=True)
class FixedClassifier:
    """The frozen classifier W ``(d, C)``, its checksum and how it was built."""

    kind: FixedKind
    matrix: torch.Tensor
    checksum: str
    report: dict[str, float | int | bool]  # SSECReport fields (geometry only for the dense ETF)


def fixed_classifier(
    kind: FixedKind, num_classes: int, dim: int, sparsity: float, gamma: float, seed: int
) -> FixedClassifier:
    """W for ``kind``: the SSE-C of :func:`fedapp.models.sse_c.build_sse_c`, or the dense simplex ETF
    scaled to column norm ``gamma`` (the ``etf`` ablation of FedLoGe Table 3).

    Built once per process and argument tuple (a ClientApp builds its client for every message; the
    SSE-C must not be rebuilt each time), then copied, so callers cannot alter the cached matrix.
    Errors name the run-config key.
    """
    cached = _cached_fixed_classifier(kind, num_classes, dim, float(sparsity), float(gamma), int(seed))
    return FixedClassifier(cached.kind, cached.matrix.clone(), cached.checksum, dict(cached.report))


@functools.lru_cache(maxsize=8)
def _cached_fixed_classifier(
    kind: FixedKind, num_classes: int, dim: int, sparsity: float, gamma: float, seed: int
) -> FixedClassifier:
    if kind == "sse-c":
        try:
            matrix, report = build_sse_c(num_classes, dim, sparsity, gamma, seed)
        except ValueError as error:
            raise ValueError(
                f"cannot build the SSE-C (sparsity={sparsity}, sse-c-norm={gamma}, {num_classes} classes, "
                f"feature dim {dim}): {error}"
            ) from None
        info = report.as_dict()
    elif kind == "etf":
        matrix = simplex_etf(num_classes, dim, seed) * gamma
        info = {"steps": 0, "seconds": 0.0, "cpu_seconds": 0.0, "converged": True, **classifier_geometry(matrix)}
    else:
        raise ValueError(f"fedloge-classifier={kind!r} is not allowed; allowed: sse-c, etf")
    return FixedClassifier(kind, matrix, sse_c_checksum(matrix), info)


class FedLoGeNet(nn.Module):
    """Backbone -> pooled features h -> fixed classifier W, global head psi, local head phi_k.

    ``forward`` gives the fixed-classifier logits (what trains theta); the heads are read through
    :class:`LinearHead` views (global and personalized models).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, fixed: FixedClassifier, head_seed: int) -> None:
        super().__init__()
        num_classes = fixed.matrix.shape[1]
        if fixed.matrix.shape[0] != feature_dim:
            raise ValueError(f"the fixed classifier has dim {fixed.matrix.shape[0]}, the features {feature_dim}")
        self.backbone = backbone
        self.register_buffer("fixed_classifier", fixed.matrix.clone(), persistent=False)
        self.fixed_checksum = fixed.checksum
        self.global_head = nn.Linear(feature_dim, num_classes, bias=False)
        self.local_head = nn.Linear(feature_dim, num_classes, bias=False)
        # Seeded init, the same on the server and every client (psi is then overwritten by the
        # server's). Distinct seeds: phi_k started equal to psi would follow psi's exact trajectory
        # through the first local round (same features, same loss).
        seeded_linear_(self.global_head, head_seed)
        seeded_linear_(self.local_head, head_seed + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def fixed_logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.fixed_classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fixed_logits(self.features(x))


class LinearHead(nn.Module):
    """``net``'s backbone with the class vectors ``weight`` (C x d) as classifier: ``h @ weight^T``.

    The global model (GA-FR psi, raw psi or W^T) and the personalized model (LA-FR phi'_k) are such
    views; ``weight`` is a buffer of the view, so the net itself is not modified.
    """

    def __init__(self, net: FedLoGeNet, weight: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.net.features(x), self.weight)


def global_classifier(net: FedLoGeNet, head: str, realign: bool) -> torch.Tensor:
    """The global model's class vectors ``(C, d)``.

    ``head="psi"``: the aggregated auxiliary head, realigned by GA-FR (Eq. 6, ``realign``) or raw.
    ``head="sse-c"``: the fixed classifier W^T (the authors' code's default ``g_head``); its columns
    all have norm gamma, so GA-FR would only divide every logit by gamma and is not applied.
    """
    if head == "sse-c":
        return net.fixed_classifier.T.detach().clone()
    if head != "psi":
        raise ValueError(f"global-head={head!r} is not allowed; allowed: psi, sse-c")
    psi = net.global_head.weight.detach()
    return ga_fr(psi) if realign else psi.clone()


def personal_classifier(net: FedLoGeNet, realign: bool) -> torch.Tensor:
    """Client k's personal class vectors ``(C, d)`` before any fine-tuning.

    ``realign``: LA-FR (Eq. 7), phi'_{k,c} = psi_c / ||psi_c|| * ||phi_{k,c}||, with psi the global
    head the client holds (the aggregate it last received); otherwise the raw local head phi_k.
    """
    phi = net.local_head.weight.detach()
    return la_fr(net.global_head.weight.detach(), phi) if realign else phi.clone()


def backbone_and_head_parameters(net: FedLoGeNet) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """theta (everything but the heads) and the heads psi and phi_k: each trains with its own optimizer."""
    heads = (GLOBAL_HEAD, LOCAL_HEAD)
    theta = [p for name, p in net.named_parameters() if not name.startswith(heads)]
    head_params = [p for name, p in net.named_parameters() if name.startswith(heads)]
    return theta, head_params


def fedloge_loss(
    model: FedLoGeNet, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Algorithm 1's per-batch objective (see the module docstring); logs each term."""
    features = model.features(images)
    backbone_loss = F.cross_entropy(model.fixed_logits(features), targets)
    frozen = features.detach()  # theta is fixed while psi and phi_k learn (line 5)
    global_loss = F.cross_entropy(model.global_head(frozen), targets)
    local_loss = F.cross_entropy(model.local_head(frozen), targets)
    total = backbone_loss + global_loss + local_loss
    return total, {
        "loss": float(backbone_loss.detach()),
        "global_head_loss": float(global_loss.detach()),
        "local_head_loss": float(local_loss.detach()),
    }


__all__ = [
    "FedLoGeNet", "FixedClassifier", "LinearHead", "backbone_and_head_parameters", "fedloge_loss", "fixed_classifier",
    "global_classifier", "personal_classifier", "encode_counts", "decode_counts", "GLOBAL_HEAD", "LOCAL_HEAD",
    "CHECKSUM_METRIC", "CLASS_COUNTS_METRIC",
]
