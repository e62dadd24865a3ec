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
  the logit can only move through the feature's direction (measured on ml-digits:
  ``docs/results/design-measurements.md``);
- the FFN is optional (``ffn_dim=0`` disables it, the default): on ml-digits it did not help and it
  adds 2*d*ffn_dim parameters to every upload;
- no positional encoding: the backbone's zero-padded convolutions already carry position, and a
  learned table would tie the module to one token count (one input size);
- the attention is ``nn.MultiheadAttention``'s parameters and function, evaluated by
  :func:`folded_cross_attention` in a cheaper order that the shared queries allow (same values and
  gradients up to float rounding, less time per training step).
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


def head_block_mask(dim: int, num_heads: int) -> torch.Tensor:
    """``(heads, dim)``: row h is 1/sqrt(d_h) on head h's d_h coordinates and 0 elsewhere."""
    head_dim = dim // num_heads
    mask = torch.zeros(num_heads, dim)
    for head in range(num_heads):
        mask[head, head * head_dim : (head + 1) * head_dim] = head_dim**-0.5
    return mask


def folded_cross_attention(
    queries: torch.Tensor,
    tokens: torch.Tensor,
    attention: nn.MultiheadAttention,
    head_mask: torch.Tensor,
    training: bool = False,
) -> torch.Tensor:
    """``attention(queries, tokens, tokens)`` for C queries shared by the whole batch, re-associated.

    The same function as ``nn.MultiheadAttention`` (same parameters; equal up to float rounding,
    see tests/test_ladm.py), evaluated in the order that is cheapest when the C queries are the same
    for every image. Per head h, with q_h = W^Q_h w + b^Q_h (d_h = d / heads):

        score_h(n) = q_h . (W^K_h f_n + b^K_h) / sqrt(d_h) = (W^K_h^T q_h / sqrt(d_h)) . f_n + const
        A_h        = sum_n softmax_n(score_h) (W^V_h f_n + b^V_h) = W^V_h (sum_n p_hn f_n) + b^V_h
        A          = W^O [A_1; ...; A_heads] + b^O

    b^K adds the same value to every token's score, which the softmax cancels; the weights p_hn sum
    to 1, so b^V passes through. The keyed queries W^K_h^T q_h are formed once per batch (C x heads
    vectors), and no per-token key or value is ever formed: per image this is
    2 N C heads d + 2 C d^2 multiply-adds instead of the 2 N d^2 + C d^2 + ... of keys and values per
    token plus the per-image query projection (the CPU timing: ``docs/results/design-measurements.md``).

    Args:
        queries: ``(C, d)`` class queries (one set for the whole batch).
        tokens: ``(B, N, d)`` image tokens (keys = values).
        attention: holds W^Q, W^K, W^V (``in_proj_weight``/``in_proj_bias``), W^O (``out_proj``),
            the head count and the attention dropout.
        head_mask: :func:`head_block_mask` of (d, heads).
        training: applies the attention dropout when True.
    """
    batch, _, dim = tokens.shape
    heads = attention.num_heads
    num_classes = queries.shape[0]
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    q = torch.addmm(bias[:dim], queries, weight[:dim].T)  # (C, d)
    # Row (c, h) = W^K_h^T q_h / sqrt(d_h): zero q outside head h's coordinates, then apply W^K^T.
    keyed = (q.unsqueeze(1) * head_mask).reshape(num_classes * heads, dim) @ weight[dim : 2 * dim]
    scores = tokens @ keyed.T  # (B, N, C*heads)
    probs = torch.softmax(scores, dim=1)  # over the N tokens
    if training and attention.dropout > 0.0:
        probs = nn.functional.dropout(probs, attention.dropout)
    pooled = (probs.transpose(1, 2) @ tokens).view(batch, num_classes, heads, dim)  # sum_n p_hn f_n
    w_v = weight[2 * dim :].view(heads, dim // heads, dim)
    values = torch.einsum("bchd,hkd->bchk", pooled, w_v).reshape(batch, num_classes, dim)  # W^V_h (.)
    return attention.out_proj(values + bias[2 * dim :])


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
        self.register_buffer("head_mask", head_block_mask(dim, num_heads), persistent=False)
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
        attended = folded_cross_attention(self.queries, tokens, self.attention, self.head_mask, self.training)  # A: (B, C, d)
        if self.norm is not None:
            features = self.norm(self.queries + self.dropout(attended))  # H = LN(Q + A)
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
