"""Static Sparse Equiangular Tight Frame Classifier (SSE-C), FedLoGe Eq. 3-5.

Xiao et al., "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data"
(ICLR 2024), Sec. 3.2 and Appendix A.7 (Table 6). Start from the simplex ETF psi (d x C, Eq. 2),
zero a fraction ``sparsity`` (beta) of its entries with a random indicator S, and optimise the
non-zero entries of psi' = psi ⊙ S for

    l_norm  = sum_c ( ||psi'_c ⊙ S_c||_2 - gamma )^2                                  (Eq. 3)
    l_angle = -(1/C) sum_c arccos( max_{j != c} <psi_hat'_c ⊙ S_c, psi_hat'_j ⊙ S_j> )   (Eq. 4)
    L_SSE-C = l_norm + l_angle                                                        (Eq. 5)

with psi_hat'_c = psi'_c / ||psi'_c||. The optimum is a sparse matrix whose columns have norm gamma
and maximal minimum pairwise angle, i.e. (when reachable) a sparse simplex ETF: every pairwise
angle arccos(-1/(C-1)).

:func:`build_sse_c` is the fast construction used by the app; :func:`naive_sse_c`
(:mod:`fedapp.models.sse_c_naive`) is the paper's plain loop, kept for the benchmark; the mask, the
measures and the checksum are in :mod:`fedapp.models.sse_c_geometry` (all importable from here).
Differences of the fast construction (the measurements behind them: ``docs/results/README.md``,
"SSE-C construction"):

* Norm constraint by projection. l_norm's minimiser is ||psi'_c|| = gamma, so every iterate is
  kept on that set (each column is rescaled after each step: projected gradient descent on
  Eq. 5, with l_norm identically 0 and only l_angle left to minimise). Letting l_norm fight
  l_angle through a shared adaptive step (the authors' Adam) stalls the angles. The returned
  matrix is finally rescaled to exactly gamma in float64.
* Smooth maximum. The gradient of the exact max reaches one neighbour per class and step, so the
  tail of near pairs shrinks slowly. The gradient uses the log-sum-exp surrogate
  ``max_j cos_cj ~ tau * log sum_{j != c} exp(cos_cj / tau)`` (an upper bound of the max, within
  tau*log(C-1)) with ``temperature`` tau. The loss that is tracked, used for early stopping and
  reported, and the reported min angle are computed with the exact max.
* Optimiser. Riemannian momentum SGD on the product of spheres: the tangent gradient of each
  column is normalised to unit length (so ``lr`` is an angle in radians per step for every class,
  independent of d, C and gamma), accumulated with heavy-ball momentum, the masked entries are
  stepped and the column is rescaled to gamma; it opens the minimum angle faster than projected
  Adam.
* Early stopping. The best iterate by exact loss is kept; when the exact loss has not improved by
  a relative ``tol`` for ``window`` steps, the step size is halved and the search restarts from the
  best iterate; after ``num_decays`` halvings the construction has converged.
* Vectorised. One Gram matrix of the normalised rows per step (diagonal masked), one matmul for
  the surrogate's gradient, no Python loop over classes; float32 by default.

Mask (the paper is ambiguous): ``mask="per-class"`` (default) zeroes exactly round(beta*d) entries
of every class vector, so every column has the same sparsity; ``mask="global"`` zeroes exactly
round(beta*d*C) entries of the whole matrix uniformly at random, as the authors' code does
(columns then differ in sparsity).

Layout: matrices are ``(dim, num_classes)`` like :func:`fedapp.models.etf.simplex_etf` (column c =
class c); an ``nn.Linear(dim, C)`` takes the transpose as its weight.
"""

from __future__ import annotations

import math
import time

import torch

from fedapp.models.etf import simplex_etf
from fedapp.models.sse_c_geometry import (  # noqa: F401 (re-exported: imported from fedapp.models.sse_c)
    MaskKind,
    SSECReport,
    classifier_geometry,
    intra_op_threads,
    make_report,
    sparse_mask,
    sse_c_checksum,
    validate,
)
from fedapp.models.sse_c_naive import naive_sse_c  # noqa: F401 (re-exported)


def _exact_loss(cosines: torch.Tensor, norms: torch.Tensor, gamma: float) -> float:
    """L_SSE-C (Eq. 5) with the exact max; ``cosines`` has its diagonal set to -inf."""
    nearest = cosines.max(dim=1).values.clamp(-1.0, 1.0)
    l_angle = -torch.acos(nearest.double()).mean().item()
    l_norm = ((norms.double() - gamma) ** 2).sum().item()
    return l_norm + l_angle


def build_sse_c(
    num_classes: int,
    dim: int,
    sparsity: float = 0.6,
    gamma: float = 1.0,
    seed: int = 0,
    *,
    mask: MaskKind = "per-class",
    max_steps: int = 3000,
    lr: float = 0.01,
    momentum: float = 0.9,
    temperature: float = 0.005,
    tol: float = 1e-6,
    window: int = 25,
    num_decays: int = 4,
    dtype: torch.dtype = torch.float32,
    num_threads: int | None = 1,
) -> tuple[torch.Tensor, SSECReport]:
    """Build the SSE-C ``(dim, num_classes)`` from ``seed`` (fast construction, see module doc).

    ``lr`` is the step in radians per class vector; ``temperature`` the log-sum-exp smoothing of
    the max in Eq. 4's gradient; the run stops after ``num_decays`` halvings of ``lr``, each after
    ``window`` steps without a relative improvement of ``tol`` in the exact Eq. 5 loss, or at
    ``max_steps``. The non-zero entries of the result are rescaled so that every column has norm
    exactly ``gamma`` (in float64, then cast to ``dtype``).

    ``num_threads`` fixes torch's intra-op threads for the construction (restored afterwards):
    parallel reductions make the float result depend on the thread count, and the optimisation
    amplifies last-bit differences, so a fixed count is what makes the server and the clients
    rebuild the same matrix from the seed on the same software and hardware (see
    :func:`sse_c_checksum`). One thread is also the fastest on a shared, oversubscribed CPU.
    """
    validate(num_classes, dim, sparsity, gamma, mask)
    for name, value, low in (("max_steps", max_steps, 1), ("window", window, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(num_decays, int) or num_decays < 0:
        raise ValueError(f"num_decays must be an integer >= 0, got {num_decays!r}")
    for name, value in (("lr", lr), ("temperature", temperature)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

    with intra_op_threads(num_threads):
        return _build(num_classes, dim, sparsity, gamma, seed, mask, max_steps, lr, momentum,
                      temperature, tol, window, num_decays, dtype)


def _build(
    num_classes: int,
    dim: int,
    sparsity: float,
    gamma: float,
    seed: int,
    mask: MaskKind,
    max_steps: int,
    lr: float,
    momentum: float,
    temperature: float,
    tol: float,
    window: int,
    num_decays: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, SSECReport]:
    started = (time.perf_counter(), time.process_time())
    # Rows = classes internally: row gathers and row norms are contiguous.
    keep = sparse_mask(num_classes, dim, sparsity, seed, mask).T.contiguous().to(dtype)
    x = simplex_etf(num_classes, dim, seed).T.to(dtype) * keep
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("the mask removed every non-zero ETF entry of some class; change seed")
    x = x / norms  # unit rows; gamma is applied at the end (angles are scale-free)

    velocity = torch.zeros_like(x)
    best_x, best_loss = x.clone(), math.inf
    step_size, decays, stale, steps, converged, best_x_set = lr, 0, 0, 0, False, False
    eye = torch.eye(num_classes, dtype=torch.bool)
    with torch.no_grad():
        for steps in range(1, max_steps + 1):
            cosines = (x @ x.T).masked_fill_(eye, -math.inf)
            # x holds unit directions and psi' = gamma * x, so l_norm is rounding only.
            loss = _exact_loss(cosines, gamma * torch.linalg.vector_norm(x, dim=1), gamma)
            threshold = best_loss - tol * abs(best_loss) if best_x_set else math.inf
            if loss < threshold:
                best_x_set = True
                best_x.copy_(x)
                best_loss, stale = loss, 0
            else:
                stale += 1
            if stale >= window:
                if decays == num_decays:
                    converged = True
                    break
                decays, stale, step_size = decays + 1, 0, step_size / 2
                x.copy_(best_x)
                velocity.zero_()
                continue
            # d l_angle / d x_c with the log-sum-exp max s_c: (1/C) / sqrt(1 - s_c^2) * d s_c.
            smooth_max = temperature * torch.logsumexp(cosines / temperature, dim=1, keepdim=True)
            softmax = torch.exp((cosines - smooth_max) / temperature)
            scale = 1.0 / (
                num_classes * torch.sqrt(1.0 - smooth_max.clamp(-1.0 + 1e-6, 1.0 - 1e-6) ** 2)
            )
            coupling = softmax * scale
            grad = (coupling + coupling.T) @ x
            grad -= x * (x * grad).sum(dim=1, keepdim=True)  # tangent to each unit sphere
            grad *= keep  # zeros stay zero
            grad /= torch.linalg.vector_norm(grad, dim=1, keepdim=True).clamp_min(1e-30)
            velocity.mul_(momentum).add_(grad)
            x -= step_size * velocity
            x /= torch.linalg.vector_norm(x, dim=1, keepdim=True)

    # Exact final norms: rescale in float64 so every column has norm gamma to rounding.
    best = best_x.to(torch.float64)
    best = best * (gamma / torch.linalg.vector_norm(best, dim=1, keepdim=True))
    matrix = best.T.contiguous().to(dtype)
    return matrix, make_report(matrix, steps, started, converged)
