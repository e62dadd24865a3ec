"""The paper's plain SSE-C construction (FedLoGe Sec. 3.2 / A.3), the reference ``benchmarks/ssec.py``
times :func:`fedapp.models.sse_c.build_sse_c` against; the app itself never runs it.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch

from fedapp.models.etf import simplex_etf
from fedapp.models.sse_c_geometry import MaskKind, SSECReport, intra_op_threads, make_report, sparse_mask, validate


def naive_sse_c(
    num_classes: int,
    dim: int,
    sparsity: float = 0.6,
    gamma: float = 1.0,
    seed: int = 0,
    *,
    mask: MaskKind = "per-class",
    steps: int = 10_000,
    lr: float = 1e-4,
    optimizer: Literal["sgd", "adam"] = "sgd",
    num_threads: int | None = 1,
) -> tuple[torch.Tensor, SSECReport]:
    """The paper's plain SSE-C construction: Eq. 5 by autograd, fixed ``steps``, no early stop.

    FedLoGe Sec. 3.2 / A.3: SGD, lr 1e-4, 10,000 steps (the authors' code: ``optimizer="adam"``).
    Starts from the masked ETF psi ⊙ S without rescaling, uses the exact max of Eq. 4, masks the
    gradient so zeros stay zero, and returns the last iterate as is (no final renormalisation).
    ``converged`` is always False: this loop never tests convergence. ``num_threads`` as in
    :func:`build_sse_c`.
    """
    validate(num_classes, dim, sparsity, gamma, mask)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")

    with intra_op_threads(num_threads):
        return _naive(num_classes, dim, sparsity, gamma, seed, mask, steps, lr, optimizer)


def _naive(
    num_classes: int,
    dim: int,
    sparsity: float,
    gamma: float,
    seed: int,
    mask: MaskKind,
    steps: int,
    lr: float,
    optimizer: str,
) -> tuple[torch.Tensor, SSECReport]:
    started = (time.perf_counter(), time.process_time())
    keep = sparse_mask(num_classes, dim, sparsity, seed, mask)
    psi = (simplex_etf(num_classes, dim, seed) * keep).requires_grad_(True)
    opt_cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = opt_cls([psi], lr=lr)
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    for _ in range(steps):
        opt.zero_grad()
        norms = torch.linalg.vector_norm(psi * keep, dim=0)
        l_norm = ((norms - gamma) ** 2).sum()
        unit = psi * keep / norms
        cosines = (unit.T @ unit).masked_fill(~off_diagonal, -2.0)
        nearest = cosines.max(dim=1).values.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        l_angle = -torch.acos(nearest).mean()
        (l_norm + l_angle).backward()
        psi.grad *= keep
        opt.step()
    matrix = psi.detach().clone()
    return matrix, make_report(matrix, steps, started, False)
