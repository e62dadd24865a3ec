"""What an SSE-C is made of and measured by, shared by its two constructions (:mod:`fedapp.models.sse_c`).

The sparse indicator S (:func:`sparse_mask`), the argument checks, the Table-6 measures of a
classifier (:func:`classifier_geometry`, :class:`SSECReport`), the checksum that lets the server
check a client's rebuilt matrix (:func:`sse_c_checksum`), and the pinned thread count under which
both constructions run (:func:`intra_op_threads`).
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

MaskKind = Literal["per-class", "global"]
MASKS = ("per-class", "global")


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


def validate(num_classes: int, dim: int, sparsity: float, gamma: float, mask: str) -> None:
    """Raise a ``ValueError`` naming the first argument that no SSE-C construction accepts."""
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
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")


def sparse_mask(
    num_classes: int, dim: int, sparsity: float, seed: int, mask: MaskKind = "per-class"
) -> torch.Tensor:
    """The indicator S of FedLoGe Sec. 3.2, ``(dim, num_classes)`` float32 of 0/1.

    ``per-class``: exactly round(sparsity*dim) zeros in every column. ``global``: exactly
    round(sparsity*dim*num_classes) zeros anywhere (the authors' code). Reproducible from ``seed``.
    Raises if a column would be all zero (no direction left to optimise).
    """
    validate(num_classes, dim, sparsity, 1.0, mask)
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


def make_report(
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
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
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
