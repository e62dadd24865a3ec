"""SphereFed client (Dong et al., ECCV 2022, "SphereFed: Hyperspherical Federated Learning").

Model (:class:`fedapp.models.sphere.SphereNet`): backbone -> pooled feature -> z on the unit
hypersphere -> logit_c = s * <z, w_c> with W a fixed orthonormal classifier (seeded, never sent).
Local objective: the task loss on these scaled cosines (single-label: cross-entropy; multi-label:
per-class sigmoid + BCE, the FedNCAlign-ML paper's adaptation). The whole backbone travels (FedAvg).

Calibration: when the server's federated-evaluation instruction carries ``spherefed-calibrate``,
the client runs the *received global* model (eval mode) over its training data and returns the
sufficient statistics A_k = Z_k^T Z_k (d x d) and B_k = Z_k^T Y_k (d x C), float64, as bytes in
the evaluation metrics; the server solves the ridge system (:mod:`strategies.spherefed`). Raw
features and labels never leave the client.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clients.base import BaseClient
from fedapp.loops import evaluate_model, make_loader
from fedapp.models.sphere import (
    SphereNet,
    encode_matrix,
    feature_statistics,
    target_matrix,
)

CALIBRATE_KEY = "spherefed-calibrate"
GRAM_KEY = "spherefed-gram"
CROSS_KEY = "spherefed-cross"


class SphereFedClient(BaseClient):
    """Scaled-cosine training against a fixed orthonormal classifier; statistics for calibration."""

    def calibration_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Z^T Z, Z^T Y)`` of the current (received) model's normalised features on local data."""
        features = sphere_features(self.model, self.train_set, self.device, self.config.eval_batch_size)
        return feature_statistics(features, target_matrix(self.train_set.labels, self.bundle.num_classes))

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]):
        """Calibration statistics (when asked) and, on single-label data, the local-test accuracy (PM)."""
        self.receive(parameters, config)
        metrics: dict[str, Any] = {}
        if bool(config.get(CALIBRATE_KEY, False)):
            gram, cross = self.calibration_statistics()
            metrics[GRAM_KEY] = encode_matrix(gram)
            metrics[CROSS_KEY] = encode_matrix(cross)
        loss = 0.0
        if self.local_test_set is not None:
            values = evaluate_model(
                self.personalized_model(), self.local_test_set, self.bundle.task, self.device,
                self.bundle.class_counts(), self.config.eval_batch_size,
            )
            metrics["accuracy"] = values["accuracy"]
            loss = 1.0 - values["accuracy"]
        return loss, len(self.train_set), metrics


@torch.no_grad()
def sphere_features(model: SphereNet, dataset, device: torch.device, batch_size: int) -> np.ndarray:
    """Normalised features ``(N, d)`` of ``dataset`` in dataset order (eval mode)."""
    model.eval()
    chunks = [model.features(images.to(device)).double().cpu() for images, _ in make_loader(dataset, batch_size, shuffle=False)]
    return torch.cat(chunks).numpy()
