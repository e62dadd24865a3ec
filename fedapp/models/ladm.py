"""LADM, the Label-Aware Disentanglement Module of FedNCAlign-ML (paper Eq. 3).

One image-level feature map becomes one feature per class by multi-head cross-attention whose
queries are the C class prototypes:

    Q = W^T in R^{C x d}   (row c = ETF column w_c, fixed and identical on every client)
    K = V = F in R^{N x d} (the backbone's N = H'W' spatial tokens of one image)
    A = MultiHead(Q, K, V) = Concat_h(softmax(Q W_h^Q (F W_h^K)^T / sqrt(d/heads)) F W_h^V) W^O
    H = A                                           (default, the paper's Eq. 3)
    H = LayerNorm(Q + A)                            (residual_norm=True, post-norm decoder form)
    H = H + FFN(H)   or  LayerNorm(H + FFN(H))      (only when ffn_dim > 0; LN iff residual_norm)
    H = [h_1; ...; h_C] in R^{C x d}               (row c is the class-specific feature h_c)

The projections W^Q, W^K, W^V, W^O (and the LayerNorm / FFN weights) are trained and shared by
FedAvg; the fixed queries are a non-persistent buffer, so they are not in ``state_dict()`` and
never travel: every party rebuilds them from ``etf_seed``.

The paper states only "4-head cross-attention" and cites Query2Label (a transformer decoder layer:
self-attention, cross-attention, FFN, each with residual + LayerNorm). Choices made here:
- no self-attention among the queries: it would mix the class queries before they look at the
  image, against the point of fixed, maximally separated, per-class queries;
- bare cross-attention output by default (``residual_norm=False``), as Eq. 3 reads. The post-norm
  form LayerNorm(Q + A) is available (``residual_norm=True``) but trains badly under the *fixed* ETF
  classifier: with logit_c = <LN(w_c + A_c), w_c> the feature's magnitude is normalised away and
  the logit can only move through the feature's direction (ml-digits, SmallCNN, central, 3 epochs,
  AdamW lr 3e-3, seed 0: test macro-AUC 0.90 (SmallCNN width 16; 0.875 at width 32) vs 0.997 for
  the bare output, 0.997-0.999 over 3 seeds; with the learnable group-linear classifier both
  forms reach 0.997-1.000);
- the FFN is optional (``ffn_dim=0`` disables it, the default): on ml-digits it did not help
  (0.997 with ffn_dim=128, same as without) and it adds 2*d*ffn_dim parameters to every upload;
- no positional encoding: the backbone's zero-padded convolutions already carry position, and a
  learned table would tie the module to one token count (one input size).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from fedapp.models.etf import simplex_etf

QueryMode = Literal["etf", "etf-learnable", "random-learnable"]
QUERY_MODES: tuple[str, ...] = get_args(QueryMode)


def random_unit_queries(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """``(num_classes, dim)`` Gaussian rows scaled to unit norm (same norm as ETF columns), seeded."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(num_classes, dim, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True)


class LADM(nn.Module):
    """Cross-attention from C class queries to the image tokens: ``(B, N, d) -> (B, C, d)``.

    Args:
        dim: token / feature dimension d (the backbone's output channels); divisible by
            ``num_heads`` and at least ``num_classes - 1`` (needed by the simplex ETF).
        num_classes: C, the number of queries and of class-specific output features.
        num_heads: attention heads (4 in the paper).
        query_mode: ``"etf"`` fixed ETF queries (the paper's method; buffer, no gradient, not in
            ``state_dict``); ``"etf-learnable"`` an ``nn.Parameter`` initialised to the ETF;
            ``"random-learnable"`` an ``nn.Parameter`` initialised to seeded random unit vectors.
        etf_seed: seed of the ETF (and of the random init): every client must use the same one.
        dropout: dropout on the attention weights and on the residual branches.
        residual_norm: ``H = LayerNorm(Q + A)`` if True, the bare attention output ``A`` if False.
        ffn_dim: hidden width of the optional FFN block (0 = no FFN).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_heads: int = 4,
        query_mode: QueryMode = "etf",
        etf_seed: int = 0,
        dropout: float = 0.0,
        residual_norm: bool = False,
        ffn_dim: int = 0,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"LADM dim={dim} must be divisible by num_heads={num_heads} (num_heads >= 1)")
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode={query_mode!r} is unknown; allowed: {', '.join(map(repr, QUERY_MODES))}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LADM dropout must be in [0, 1), got {dropout}")
        if ffn_dim < 0:
            raise ValueError(f"LADM ffn_dim must be >= 0 (0 disables the FFN), got {ffn_dim}")
        self.dim = dim
        self.num_classes = num_classes
        self.query_mode = query_mode

        if query_mode == "random-learnable":
            initial = random_unit_queries(num_classes, dim, etf_seed)
        else:
            initial = simplex_etf(num_classes, dim, etf_seed).T.contiguous()  # (C, d): row c = w_c
        if query_mode == "etf":
            self.register_buffer("queries", initial, persistent=False)
        else:
            self.queries = nn.Parameter(initial)

        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.residual_norm = residual_norm
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim) if residual_norm else None
        self.ffn: nn.Sequential | None = None
        self.ffn_norm: nn.LayerNorm | None = None
        if ffn_dim > 0:
            self.ffn = nn.Sequential(
                nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
            )
            self.ffn_norm = nn.LayerNorm(dim) if residual_norm else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class-specific features ``H`` ``(B, C, d)`` from image tokens ``F`` ``(B, N, d)``."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"LADM expects tokens (B, N, {self.dim}), got {tuple(tokens.shape)}")
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, C, d)
        attended, _ = self.attention(queries, tokens, tokens, need_weights=False)  # A: (B, C, d)
        if self.norm is not None:
            features = self.norm(queries + self.dropout(attended))  # H = LN(Q + A)
        else:
            features = attended  # H = A
        if self.ffn is not None:
            features = features + self.dropout(self.ffn(features))  # H = H + FFN(H)
            if self.ffn_norm is not None:
                features = self.ffn_norm(features)  # H = LN(H + FFN(H))
        return features

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_classes={self.num_classes}, query_mode={self.query_mode!r}, "
            f"residual_norm={self.residual_norm}"
        )
