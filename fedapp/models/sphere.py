"""SphereFed's network and its closed-form classifier calibration (Dong et al., ECCV 2022,
"SphereFed: Hyperspherical Federated Learning"), as pure functions and small modules.

Training-time model (every client, every round):

    z = f(x) / ||f(x)||                      pooled backbone feature on the unit hypersphere
    W in R^{d x C}, W^T W = I_C              fixed orthonormal class vectors (seeded, shared, never sent)
    logit_c = s * <z, w_c> = s * cos(z, w_c)

Single-label data: softmax cross-entropy on these logits (the paper's setting). Multi-label data
(the FedNCAlign-ML paper's adaptation): one sigmoid per class on the same scaled cosines, binary
cross-entropy averaged over samples and classes.

Calibration (server, from the clients' sufficient statistics of the *global* feature extractor):

    A_k = Z_k^T Z_k  (d x d),   B_k = Z_k^T Y_k  (d x C)       Z_k: client k's normalised features
    W* = (sum_k A_k + lambda I)^{-1} sum_k B_k                   ridge regression onto the targets

Y is one-hot (single-label) or multi-hot (multi-label), so ``score = z^T W*`` estimates the
label indicators and 1/2 is its decision threshold. The calibrated network reports
``logit = s * (z^T W* - 1/2)``: a strictly increasing map of the regression score (AUC and argmax
unchanged) whose sigmoid crosses 0.5 exactly where the score crosses 1/2, so the app's F1 at
probability 0.5 is the regression's own decision rule. Sums of A_k and B_k give exactly the
centralised least-squares solution: no weighting by client size is needed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from fedapp.models.etf import random_orthonormal

FEATURE_EPS = 1e-12  # guards the normalisation of an all-zero feature (possible after ReLU)


def sphere_normalize(features: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` ``(B, d)`` scaled to unit L2 norm (the hypersphere projection)."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(FEATURE_EPS)


def orthonormal_classifier(dim: int, num_classes: int, seed: int) -> torch.Tensor:
    """The fixed ``(d, C)`` classifier: orthonormal unit-norm columns from ``seed`` (needs d >= C)."""
    if dim < num_classes:
        raise ValueError(
            f"SphereFed's orthonormal classifier needs feature dim >= num_classes, got d={dim}, C={num_classes}"
        )
    return random_orthonormal(dim, num_classes, seed)


class SphereNet(nn.Module):
    """Backbone -> global average pooling -> unit sphere -> fixed orthonormal classifier * scale.

    ``classifier`` is a non-persistent buffer: no gradient, not in ``state_dict()``, never sent;
    every party rebuilds it from ``seed``. ``scale`` (s) is a fixed hyper-parameter.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, scale: float, seed: int) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"spherefed-scale must be > 0, got {scale}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.scale = float(scale)
        self.register_buffer("classifier", orthonormal_classifier(feature_dim, num_classes, seed), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``z`` ``(B, d)``, each on the unit hypersphere."""
        return sphere_normalize(self.backbone(x).mean(dim=(2, 3)))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.features(x)
        return self.scale * (z @ self.classifier), z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


class CalibratedSphereNet(nn.Module):
    """A trained :class:`SphereNet` whose classifier is replaced by the ridge solution ``W*``.

    ``logit = s * (z^T W* - 1/2)`` (see the module docstring); evaluation only.
    """

    def __init__(self, net: SphereNet, calibrated: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        weight = torch.as_tensor(np.asarray(calibrated), dtype=torch.float32)
        if tuple(weight.shape) != (net.feature_dim, net.num_classes):
            raise ValueError(
                f"calibrated classifier has shape {tuple(weight.shape)}, expected {(net.feature_dim, net.num_classes)}"
            )
        self.net = net
        self.register_buffer("calibrated", weight.to(net.classifier.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.scale * (self.net.features(x) @ self.calibrated - 0.5)


# ------------------------------------------------------------------ calibration math
def target_matrix(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """``Y`` as float64 ``(N, C)``: multi-hot rows kept, class ids ``(N,)`` one-hot encoded."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        if targets.shape[1] != num_classes:
            raise ValueError(f"multi-hot targets have {targets.shape[1]} columns, expected {num_classes}")
        return targets.astype(np.float64)
    if targets.ndim != 1:
        raise ValueError(f"targets must be (N,) class ids or (N, C) multi-hot, got shape {targets.shape}")
    onehot = np.zeros((len(targets), num_classes), dtype=np.float64)
    onehot[np.arange(len(targets)), targets.astype(np.int64)] = 1.0
    return onehot


def feature_statistics(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A client's sufficient statistics ``(Z^T Z, Z^T Y)`` in float64 for features ``Z`` ``(N, d)``
    and targets ``Y`` ``(N, C)``."""
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.ndim != 2 or y.ndim != 2 or len(z) != len(y):
        raise ValueError(f"features (N, d) and targets (N, C) must have the same N, got {z.shape} and {y.shape}")
    return z.T @ z, z.T @ y


def ridge_classifier(
    grams: Sequence[np.ndarray], crosses: Sequence[np.ndarray], ridge: float
) -> np.ndarray:
    """``W* = (sum_k A_k + ridge * I)^{-1} sum_k B_k``, float64 ``(d, C)``.

    ``ridge`` must be > 0 unless the summed Gram matrix is non-singular; a singular system is an
    error that names the key to raise.
    """
    if not grams or len(grams) != len(crosses):
        raise ValueError(f"need one cross term per Gram matrix and at least one of each, got {len(grams)} and {len(crosses)}")
    if ridge < 0:
        raise ValueError(f"spherefed-ridge must be >= 0, got {ridge}")
    gram = np.sum([np.asarray(a, dtype=np.float64) for a in grams], axis=0)
    cross = np.sum([np.asarray(b, dtype=np.float64) for b in crosses], axis=0)
    system = gram + ridge * np.eye(gram.shape[0])
    try:
        return np.linalg.solve(system, cross)
    except np.linalg.LinAlgError as error:
        raise np.linalg.LinAlgError(
            f"the calibration system is singular with spherefed-ridge={ridge}; use a ridge > 0"
        ) from error


# ------------------------------------------------------------------ wire format
def encode_matrix(matrix: np.ndarray) -> bytes:
    """Little-endian float64 bytes of ``matrix`` (a metrics value Flower can carry)."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def decode_matrix(payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`encode_matrix` for a known ``shape``; wrong sizes are an error."""
    expected = int(np.prod(shape)) * 8
    if not isinstance(payload, (bytes, bytearray)) or len(payload) != expected:
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else type(payload).__name__
        raise ValueError(f"expected {expected} bytes for a float64 matrix of shape {shape}, got {size}")
    matrix = np.frombuffer(payload, dtype="<f8").reshape(shape).astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("matrix has non-finite values")
    return matrix
