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

:func:`build_sse_c` is the fast construction used by the app; :func:`naive_sse_c` is the paper's
plain loop, kept for the benchmark. Differences of the fast construction, all measured in
``benchmarks/ssec.py``:

* Norm constraint by projection. l_norm's minimiser is ||psi'_c|| = gamma, so every iterate is
  kept on that set (each column is rescaled after each step: projected gradient descent on
  Eq. 5, with l_norm identically 0 and only l_angle left to minimise). Letting l_norm fight
  l_angle through a shared adaptive step (the authors' Adam) stalls the angles: at C=1000,
  d=2048 Adam on the summed loss reached a min angle of 88.4 deg in 100 steps, Adam with this
  projection 89.9 deg. The returned matrix is finally rescaled to exactly gamma in float64.
* Smooth maximum. The gradient of the exact max reaches one neighbour per class and step, so the
  tail of near pairs shrinks slowly (87.7 deg after 100 steps at C=1000). The gradient uses the
  log-sum-exp surrogate ``max_j cos_cj ~ tau * log sum_{j != c} exp(cos_cj / tau)`` (an upper
  bound of the max, within tau*log(C-1)) with ``temperature`` tau. The loss that is tracked,
  used for early stopping and reported, and the reported min angle are computed with the exact max.
* Optimiser. Riemannian momentum SGD on the product of spheres: the tangent gradient of each
  column is normalised to unit length (so ``lr`` is an angle in radians per step for every class,
  independent of d, C and gamma), accumulated with heavy-ball momentum, the masked entries are
  stepped and the column is rescaled to gamma. It reached a min angle of 90.02 deg in 100 steps
  at C=1000, d=2048 where projected Adam reached 89.94 deg.
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

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from fedapp.models.etf import simplex_etf

MaskKind = Literal["per-class", "global"]
_MASKS = ("per-class", "global")


@dataclass(frozen=True)
class SSECReport:
    """How an SSE-C construction went, and the geometry of its result (cf. FedLoGe Table 6).

    ``seconds`` is wall time; ``cpu_seconds`` the process CPU time (all threads), the steadier
    measure on a shared machine. ``norm_var`` and ``angle_var_deg2`` are population variances
    (ddof=0, as the authors' code);
    angles are over all pairs of distinct classes; ``sparsity`` is the measured fraction of zero
    entries; ``converged`` is True when the early-stopping test ended the run.
    """

    steps: int
    seconds: float
    cpu_seconds: float
    norm_mean: float
    norm_var: float
    mean_angle_deg: float
    min_angle_deg: float
    angle_var_deg2: float
    sparsity: float
    converged: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _validate(num_classes: int, dim: int, sparsity: float, gamma: float, mask: str) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(dim, int) or dim < num_classes - 1:
        raise ValueError(
            f"dim must be an integer >= num_classes - 1 = {num_classes - 1} (simplex ETF), "
            f"got {dim!r}"
        )
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must be in [0, 1) (fraction of zero entries), got {sparsity!r}")
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0 (target column norm), got {gamma!r}")
    if mask not in _MASKS:
        raise ValueError(f"mask must be one of {_MASKS}, got {mask!r}")


def sparse_mask(
    num_classes: int, dim: int, sparsity: float, seed: int, mask: MaskKind = "per-class"
) -> torch.Tensor:
    """The indicator S of FedLoGe Sec. 3.2, ``(dim, num_classes)`` float32 of 0/1.

    ``per-class``: exactly round(sparsity*dim) zeros in every column. ``global``: exactly
    round(sparsity*dim*num_classes) zeros anywhere (the authors' code). Reproducible from ``seed``.
    Raises if a column would be all zero (no direction left to optimise).
    """
    _validate(num_classes, dim, sparsity, 1.0, mask)
    generator = torch.Generator().manual_seed(seed)
    if mask == "per-class":
        zeros = round(sparsity * dim)
        if zeros >= dim:
            raise ValueError(
                f"sparsity={sparsity} leaves no non-zero entry in a column of dim={dim}"
            )
        order = torch.rand(num_classes, dim, generator=generator).argsort(dim=1)
        keep = torch.ones(num_classes, dim)
        keep.scatter_(1, order[:, :zeros], 0.0)
        return keep.T.contiguous()
    zeros = round(sparsity * dim * num_classes)
    flat = torch.ones(dim * num_classes)
    flat[torch.randperm(dim * num_classes, generator=generator)[:zeros]] = 0.0
    keep = flat.reshape(dim, num_classes)
    empty = (keep.sum(dim=0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"the global mask (sparsity={sparsity}, seed={seed}) zeroes every entry of classes "
            f"{empty[:10]}; use mask='per-class' or a lower sparsity"
        )
    return keep


def classifier_geometry(matrix: torch.Tensor) -> dict[str, float]:
    """Table-6 measures of a ``(dim, C)`` classifier, computed in float64.

    Returns ``norm_mean``, ``norm_var`` (column L2 norms, ddof=0), ``mean_angle_deg``,
    ``min_angle_deg``, ``angle_var_deg2`` (over the C(C-1)/2 pairs of distinct columns) and
    ``sparsity`` (fraction of exactly-zero entries).
    """
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(f"matrix must be (dim, C) with C >= 2, got shape {tuple(matrix.shape)}")
    m = matrix.detach().to(torch.float64)
    norms = torch.linalg.vector_norm(m, dim=0)
    unit = m / norms
    cosines = unit.T @ unit
    rows, cols = torch.triu_indices(m.shape[1], m.shape[1], offset=1)
    angles = torch.rad2deg(torch.acos(cosines[rows, cols].clamp(-1.0, 1.0)))
    return {
        "norm_mean": norms.mean().item(),
        "norm_var": norms.var(unbiased=False).item(),
        "mean_angle_deg": angles.mean().item(),
        "min_angle_deg": angles.min().item(),
        "angle_var_deg2": angles.var(unbiased=False).item(),
        "sparsity": (m == 0).double().mean().item(),
    }


def _report(
    matrix: torch.Tensor, steps: int, started: tuple[float, float], converged: bool
) -> SSECReport:
    """Report for ``matrix``; ``started`` = (perf_counter, process_time) at the start."""
    return SSECReport(
        steps=steps,
        seconds=time.perf_counter() - started[0],
        cpu_seconds=time.process_time() - started[1],
        converged=converged,
        **classifier_geometry(matrix),
    )


@contextlib.contextmanager
def _intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run with ``num_threads`` torch intra-op threads (None: unchanged), then restore."""
    if num_threads is None:
        yield
        return
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an integer >= 1 or None, got {num_threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    _validate(num_classes, dim, sparsity, gamma, mask)
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

    with _intra_op_threads(num_threads):
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
    return matrix, _report(matrix, steps, started, converged)


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
    _validate(num_classes, dim, sparsity, gamma, mask)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")

    with _intra_op_threads(num_threads):
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
    return matrix, _report(matrix, steps, started, False)


def sse_c_checksum(matrix: torch.Tensor, decimals: int | None = 6) -> str:
    """SHA-256 of an SSE-C, so the server can check that a client rebuilt the same matrix.

    The matrix is rounded to ``decimals`` decimal places and hashed as little-endian int64
    (rounding absorbs last-bit float differences between BLAS builds; integers make -0.0 and
    0.0 equal), together with its shape. ``decimals=None`` hashes the exact float32 bytes.
    """
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
        raise ValueError("matrix must be a 2-D torch.Tensor (dim, C)")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("matrix contains NaN or infinite values")
    digest = hashlib.sha256(f"sse-c|{tuple(matrix.shape)}|{decimals}|".encode())
    m = matrix.detach().cpu().contiguous()
    if decimals is None:
        payload = (m.to(torch.float32) + 0.0).numpy().astype("<f4").tobytes()
    else:
        if not isinstance(decimals, int) or not 0 <= decimals <= 12:
            raise ValueError(f"decimals must be an integer in [0, 12] or None, got {decimals!r}")
        quantised = torch.round(m.to(torch.float64) * 10.0**decimals).to(torch.int64)
        payload = quantised.numpy().astype("<i8").tobytes()
    digest.update(payload)
    return digest.hexdigest()
