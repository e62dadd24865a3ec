"""TensorBoard event files of a run, written by the server (``tensorboard=true``, the default).

``tensorboard --logdir outputs`` then shows, per run directory:

- **Scalars** per round, grouped by prefix: ``test/<metric>`` and ``val/<metric>`` (the global
  model; ``test/pm`` and FedLoGe's ``test/pm_*`` are the personalized ones), ``train/<term>``
  (the clients' mean training objective), ``traffic/bytes_sent``, ``traffic/bytes_received``,
  ``time/round_seconds`` and ``clients/<count>``.
- **HPARAMS**: the run's :data:`HPARAM_KEYS` (algorithm, dataset, partition, alpha, rho, imbalance
  factor, ...) against the final ``test/*`` metrics, so runs can be filtered and compared.

Only the server imports ``torch.utils.tensorboard`` (lazily, here); the ClientApp never pays for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

HPARAM_KEYS = (
    "algorithm", "dataset", "partition", "alpha", "class-presence-ratio", "imbalance-factor", "seed",
    "num-server-rounds", "local-epochs", "batch-size", "optimizer", "lr", "backbone", "fraction-fit",
)
HPARAM_METRICS = {
    "multilabel": ("test/macro_auc", "test/macro_f1", "test/micro_auc", "test/micro_f1"),
    "singlelabel": ("test/accuracy", "test/pm", "test/many", "test/medium", "test/few"),
}
_GROUPS = {"test_": "test/", "val_": "val/", "train_": "train/", "uncalibrated_": "uncalibrated/"}
_SINGLE = {
    "bytes_sent": "traffic/bytes_sent", "bytes_received": "traffic/bytes_received",
    "round_seconds": "time/round_seconds", "fit_seconds": "time/fit_seconds",
    "wall_seconds": "time/wall_seconds", "clients_ok": "clients/ok", "clients_failed": "clients/failed",
    "clients_rejected": "clients/rejected",
}


def scalar_tag(key: str) -> str | None:
    """The TensorBoard tag of a ``metrics.jsonl`` key, or None if it is not plotted."""
    if key in _SINGLE:
        return _SINGLE[key]
    for prefix, group in _GROUPS.items():
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return None


class TensorBoardLog:
    """One ``SummaryWriter`` in the run directory: per-round scalars and the hparams record."""

    def __init__(self, run_dir: Path, config: dict[str, Any], task: str) -> None:
        # Lazy: torch.utils.tensorboard imports the tensorboard package (a second), wanted only by the server.
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(run_dir))
        values = {key: _hparam_value(config.get(key)) for key in HPARAM_KEYS if key in config}
        # Written up front, so a run in progress is already listed in the HPARAMS tab.
        for summary in hparams(values, {tag: 0.0 for tag in HPARAM_METRICS[task]}):
            self.writer.file_writer.add_summary(summary)

    def log_round(self, row: dict[str, Any]) -> None:
        """Every finite number of a ``metrics.jsonl`` row, at step = its round."""
        step = int(row["round"])
        for key, value in row.items():
            tag = scalar_tag(key)
            if tag and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparam_value(value: Any) -> bool | float | str:
    """TensorBoard's hparams take bool, number or string."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)
