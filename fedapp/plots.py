"""PNG plots of one run (each metric over rounds) and of several runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

METRIC_TITLES = {
    "macro_auc": "Macro AUC", "micro_auc": "Micro AUC", "macro_f1": "Macro F1", "micro_f1": "Micro F1",
    "accuracy": "Global-model accuracy (GM)", "pm": "Personalized accuracy (PM)",
    "many": "Many-shot accuracy", "medium": "Medium-shot accuracy", "few": "Few-shot accuracy",
}


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_run(rows: Sequence[dict[str, Any]], out_dir: Path, task: str) -> list[Path]:
    """One PNG per test metric (validation dashed, where recorded) and one for the training loss terms."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = sorted({k[len("test_"):] for r in rows for k in r if k.startswith("test_")})
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot(*_series(rows, f"test_{metric}"), marker="o", ms=3, label="global test set")
        val_rounds, val_values = _series(rows, f"val_{metric}")
        if val_rounds:
            ax.plot(val_rounds, val_values, ls="--", label="validation split")
        ax.set(title=METRIC_TITLES.get(metric, metric), xlabel="round", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        written.append(out_dir / f"{metric}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    loss_terms = sorted({k for r in rows for k in r if k.startswith("train_")})
    if loss_terms:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for term in loss_terms:
            ax.plot(*_series(rows, term), marker="o", ms=3, label=term[len("train_"):])
        ax.set(title="Local training objective (mean over clients)", xlabel="round", ylabel="value")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(out_dir / "train_loss.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def plot_comparison(runs: Sequence[dict[str, Any]], labels: Sequence[str], metric: str, path: Path) -> Path:
    """``metric`` (test split) over rounds, one line per run."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for run, label in zip(runs, labels):
        ax.plot(*_series(run["rows"], f"test_{metric}"), marker="o", ms=3, label=label)
    ax.set(title=f"{METRIC_TITLES.get(metric, metric)} on the global test set", xlabel="round", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
