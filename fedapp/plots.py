"""PNG plots of one run (each metric over rounds, the partition, per-client metrics) and of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np

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


def plot_partition(
    counts: np.ndarray, class_names: Sequence[str], global_counts: np.ndarray, task: str, path: Path
) -> Path:
    """Clients x classes training counts as a heatmap (absent classes left white, so the
    class-presence pattern shows), beside the global training count of each class (log scale: the
    long tail shows as a slope)."""
    counts = np.asarray(counts)
    num_clients, num_classes = counts.shape
    width = min(14.0, 4.0 + 0.35 * num_classes)
    height = min(12.0, 2.2 + 0.3 * num_clients)
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(width + 4.0, height),
                                  gridspec_kw={"width_ratios": [max(width, 3.0), 3.0]})
    shown = np.ma.masked_equal(counts, 0)
    image = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="training samples" if task == "singlelabel"
                 else "positive samples")
    if num_clients * num_classes <= 300:
        for (k, c), value in np.ndenumerate(counts):
            if value:
                ax.text(c, k, str(int(value)), ha="center", va="center", fontsize=6,
                        color="white" if value < counts.max() * 0.6 else "black")
    ax.set(xlabel="class", ylabel="client (partition id)",
           title=f"Partition: {num_clients} clients x {num_classes} classes (white = class absent)")
    if num_classes <= 40:
        ax.set_xticks(range(num_classes), [str(n)[:12] for n in class_names], rotation=60, ha="right", fontsize=7)
    if num_clients <= 40:
        ax.set_yticks(range(num_clients))
        ax.tick_params(axis="y", labelsize=7)
    global_counts = np.asarray(global_counts)
    bar.barh(range(num_classes), global_counts, color="#4c72b0")
    ratio = global_counts.max() / max(global_counts.min(), 1) if len(global_counts) else 1.0
    if ratio >= 5:  # a long tail: log scale, so the tail classes stay visible
        bar.set_xscale("log")
    bar.invert_yaxis()
    bar.set(title="Global training count per class", xlabel="samples" + (" (log)" if ratio >= 5 else ""),
            ylabel="class")
    if num_classes <= 40:
        bar.set_yticks(range(num_classes), [str(n)[:12] for n in class_names], fontsize=7)
    if len(global_counts) and global_counts.min() > 0:
        bar.text(0.98, 0.02, f"imbalance n_max/n_min = {global_counts.max() / global_counts.min():.1f}",
                 transform=bar.transAxes, ha="right", va="bottom", fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


CLIENT_METRICS = {
    "singlelabel": (("accuracy", "Personalized accuracy on each local test set"),),
    "multilabel": (("macro_f1", "Macro-F1 over the client's classes"),
                   ("macro_auc", "Macro-AUC over the client's classes")),
}


def plot_clients(clients: dict[str, Any], task: str, path: Path) -> Path:
    """One bar per client of each per-client metric (``clients.jsonl``'s last line), mean dashed."""
    per_client = clients["clients"]
    ids = sorted(per_client, key=int)
    panels = [(key, title) for key, title in CLIENT_METRICS[task] if any(key in per_client[i] for i in ids)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(min(14.0, 7.0 + 0.2 * len(ids)), 2.8 * len(panels)),
                             squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], panels):
        values = [per_client[i].get(key, float("nan")) for i in ids]
        ax.bar(range(len(ids)), values, color="#55a868")
        finite = [v for v in values if v is not None and np.isfinite(v)]
        if finite:
            ax.axhline(float(np.mean(finite)), ls="--", color="black", lw=1, label=f"mean {np.mean(finite):.3f}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set(title=f"{title}, round {clients['round']}", xlabel="client (partition id)", ylabel=key, ylim=(0, 1.02))
        ax.set_xticks(range(len(ids)), ids, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
