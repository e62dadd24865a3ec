"""Simplex equiangular tight frames (ETF): fixed class prototypes shared by every client.

    W = sqrt(C / (C - 1)) * U @ (I_C - (1 / C) * 1 1^T),   U in R^{d x C},  U^T U = I_C

Every column has unit norm and every pair of columns has cosine -1 / (C - 1), the maximally
separated configuration of C unit vectors (Papyan et al., 2020). ``U`` comes from the QR
decomposition of a seeded Gaussian matrix, so the server and all clients build the same W from the
same seed and W never has to travel.
"""

from __future__ import annotations

import math

import torch


def random_orthonormal(dim: int, num_columns: int, seed: int) -> torch.Tensor:
    """A ``(dim, num_columns)`` matrix with orthonormal columns, reproducible from ``seed``."""
    if num_columns > dim:
        raise ValueError(f"cannot build {num_columns} orthonormal columns in dimension {dim}")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(dim, num_columns, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # Fix the sign ambiguity of QR so the result depends on the seed only.
    return (q * torch.sign(torch.diagonal(r))).to(torch.float32)


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The ``(dim, num_classes)`` simplex ETF; column ``c`` is the prototype of class ``c``.

    Requires ``dim >= num_classes - 1``. When ``dim == num_classes - 1`` the C columns span the
    whole space; U is then taken with C columns in dimension C and projected, which keeps the
    closed form exact.
    """
    if num_classes < 2:
        raise ValueError(f"a simplex ETF needs num_classes >= 2, got {num_classes}")
    if dim < num_classes - 1:
        raise ValueError(
            f"a simplex ETF of {num_classes} classes needs dim >= {num_classes - 1}, got dim={dim}"
        )
    centering = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    if dim >= num_classes:
        basis = random_orthonormal(dim, num_classes, seed).to(torch.float64)
        etf = basis @ centering
    else:  # dim == C - 1: rotate the centered C-simplex into its own (C-1)-dim subspace
        simplex = random_orthonormal(num_classes, num_classes, seed).to(torch.float64) @ centering
        left, _, _ = torch.linalg.svd(simplex, full_matrices=False)
        etf = left[:, :dim].T @ simplex
    return (math.sqrt(num_classes / (num_classes - 1)) * etf).to(torch.float32)
