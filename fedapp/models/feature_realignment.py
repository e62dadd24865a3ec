"""FedLoGe's feature realignment (GA-FR, LA-FR) and class-wise aggregation of the auxiliary head.

Xiao et al., "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data"
(ICLR 2024), Sec. 3.3 and Algorithm 1, stages 2-3.

Layout: every head here is the ``weight`` of an ``nn.Linear(d, C)``, shape ``(C, d)``: row ``c`` is
the classifier vector of class ``c`` (the paper's psi_c, a column of its d x C matrices). Biases are
not part of Eq. 6-7; callers keep them unchanged.

    GA-FR (Eq. 6):  psi'_c     = psi_c / ||psi_c||_2
    LA-FR (Eq. 7):  phi'_{k,c} = (psi_c / ||psi_c||_2) * ||phi_{k,c}||_2

LA-FR takes psi *before* or *after* GA-FR: Algorithm 1 runs GA-FR first (line 8) and Eq. 7 then
multiplies the already unit-norm psi_c, so both readings give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _check_head(name: str, head: torch.Tensor) -> None:
    if not isinstance(head, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (C, d), got {type(head).__name__}")
    if head.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (C, d) like nn.Linear.weight, got shape {tuple(head.shape)}"
        )
    if not torch.is_floating_point(head):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {head.dtype}")
    if not bool(torch.isfinite(head).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _unit_rows(name: str, head: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(head, dim=1, keepdim=True)
    zero = (norms.squeeze(1) == 0).nonzero().flatten().tolist()
    if zero:
        # A zero row has no direction to keep; silently mapping it to zero would hide a dead class.
        raise ValueError(f"{name} has zero-norm class rows {zero}: GA-FR/LA-FR need a direction")
    return head / norms


def ga_fr(psi: torch.Tensor) -> torch.Tensor:
    """Global adaptive feature realignment (FedLoGe Eq. 6): ``psi'_c = psi_c / ||psi_c||_2``.

    ``psi`` is the aggregated auxiliary head, ``(C, d)`` (``nn.Linear.weight``: row c = class c).
    Returns a new tensor whose rows are unit vectors with the directions of ``psi``'s rows: the
    long-tailed norms (which track class cardinality) are replaced by the balanced norm 1.
    """
    _check_head("psi", psi)
    return _unit_rows("psi", psi)


def la_fr(psi: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Local adaptive feature realignment (FedLoGe Eq. 7).

        phi'_{k,c} = (psi_c / ||psi_c||_2) * ||phi_{k,c}||_2

    ``psi`` is the global auxiliary head and ``phi`` client k's local head, both ``(C, d)``
    (``nn.Linear.weight``: row c = class c). The result keeps the global directions and takes each
    class's norm from the local head, i.e. the client's preference for its frequent classes.
    """
    _check_head("psi", psi)
    _check_head("phi", phi)
    if psi.shape != phi.shape:
        raise ValueError(
            f"psi and phi must have the same (C, d) shape, got {tuple(psi.shape)} and "
            f"{tuple(phi.shape)}"
        )
    local_norms = torch.linalg.vector_norm(phi, dim=1, keepdim=True)
    return _unit_rows("psi", psi) * local_norms.to(psi.dtype)


def classwise_head_weights(class_counts: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
    """Per-class aggregation weights of the auxiliary head psi, shape ``(K, C)``.

    The authors' code (``cls_norm_agg``) weights client k's row c by

        a_{k,c} = (n_k / sum_k' n_k') * (p_k[c] / sum_k' p_k'[c])

    with ``n_k = num_samples[k]`` and ``p_k = class_counts[k] / class_counts[k].sum()``, the class
    proportions of client k (a client with no samples has ``p_k = 0``). These raw weights do not
    sum to 1 over k, which would rescale class c's aggregated row; we normalise them over k per
    class: ``a_{k,c} <- a_{k,c} / sum_k' a_{k',c}``. When ``num_samples`` equals the row sums of
    ``class_counts`` this is exactly ``n_{k,c} / sum_k' n_{k',c}`` (the share of class c's samples
    held by client k), the variant active in the authors' code.

    A class that no client holds (``sum_k p_k[c] = 0``) falls back to the FedAvg weights
    ``n_k / sum n``.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    sizes = np.asarray(num_samples, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(
            f"class_counts must be 2-D (K clients, C classes), got shape {counts.shape}"
        )
    if sizes.shape != (counts.shape[0],):
        raise ValueError(
            f"num_samples must have shape ({counts.shape[0]},) to match class_counts, "
            f"got {sizes.shape}"
        )
    for name, arr in (("class_counts", counts), ("num_samples", sizes)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and non-negative")
    if sizes.sum() <= 0:
        raise ValueError("num_samples must not be all zero: no client has data")

    fedavg = sizes / sizes.sum()  # (K,)
    row_sums = counts.sum(axis=1, keepdims=True)
    proportions = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    class_mass = proportions.sum(axis=0)  # (C,)
    share = np.divide(
        proportions, class_mass, out=np.zeros_like(proportions), where=class_mass > 0
    )
    raw = fedavg[:, None] * share
    totals = raw.sum(axis=0)  # (C,)
    weights = np.divide(raw, totals, out=np.zeros_like(raw), where=totals > 0)
    # Unheld classes, or classes held only by clients with n_k = 0: plain FedAvg weights.
    weights[:, totals <= 0] = fedavg[:, None]
    return weights


def aggregate_head(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray] | None,
    class_weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class-wise weighted average of K clients' heads (rows = classes, as ``nn.Linear``).

        W[c] = sum_k class_weights[k, c] * weights[k][c]
        b[c] = sum_k class_weights[k, c] * biases[k][c]

    ``weights`` are K arrays ``(C, d)``, ``biases`` K arrays ``(C,)`` or ``None``, ``class_weights``
    ``(K, C)`` with non-negative columns summing to 1 (e.g. from :func:`classwise_head_weights`).
    Accumulates in float64 and returns the first head's dtype.
    """
    if len(weights) == 0:
        raise ValueError("weights must hold at least one client head")
    stacked = np.stack([np.asarray(w) for w in weights]) if _same_shapes(weights) else None
    if stacked is None or stacked.ndim != 3:
        shapes = [np.shape(w) for w in weights]
        raise ValueError(f"weights must be K arrays of one shape (C, d), got shapes {shapes}")
    num_clients, num_classes, _ = stacked.shape
    cw = np.asarray(class_weights, dtype=np.float64)
    if cw.shape != (num_clients, num_classes):
        raise ValueError(
            f"class_weights must have shape (K, C) = ({num_clients}, {num_classes}), got {cw.shape}"
        )
    if not np.all(np.isfinite(cw)) or np.any(cw < 0):
        raise ValueError("class_weights must be finite and non-negative")
    column_sums = cw.sum(axis=0)
    bad = np.flatnonzero(np.abs(column_sums - 1.0) > 1e-6)
    if bad.size:
        raise ValueError(
            f"class_weights[:, c] must sum to 1 for every class; classes {bad.tolist()[:10]} "
            f"sum to "
            f"{column_sums[bad][:10].tolist()}"
        )
    out_dtype = stacked.dtype
    head = np.einsum("kc,kcd->cd", cw, stacked.astype(np.float64)).astype(out_dtype)
    if biases is None:
        return head, None
    if len(biases) != num_clients:
        raise ValueError(f"biases must hold {num_clients} arrays (one per head), got {len(biases)}")
    bias_stack = np.stack([np.asarray(b) for b in biases]) if _same_shapes(biases) else None
    if bias_stack is None or bias_stack.shape != (num_clients, num_classes):
        shapes = [np.shape(b) for b in biases]
        raise ValueError(f"biases must be K arrays of shape ({num_classes},), got shapes {shapes}")
    bias = (cw * bias_stack.astype(np.float64)).sum(axis=0).astype(bias_stack.dtype)
    return head, bias


def _same_shapes(arrays: Sequence[np.ndarray]) -> bool:
    return len({np.shape(a) for a in arrays}) == 1
