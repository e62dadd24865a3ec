"""Screening client updates before aggregation: why an update cannot be aggregated, or None.

Pure functions over numpy arrays and Flower's failure objects, used by
:meth:`strategies.base.FederatedStrategy.aggregate_fit` and when a checkpoint is resumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_update(
    arrays: list[np.ndarray],
    reference: list[np.ndarray],
    max_norm: float | None = None,
    origin: list[np.ndarray] | None = None,
) -> str | None:
    """Why an update cannot be aggregated, or None if it can.

    Checks, in order: the number of arrays, each shape and dtype against ``reference``, finiteness,
    and (if ``max_norm``) the L2 norm of the update delta ``arrays - origin`` over the arrays of
    ``origin`` (the global model the client started from; ``reference`` when not given).
    """
    if len(arrays) != len(reference):
        return f"expected {len(reference)} arrays, got {len(arrays)}"
    for index, (array, expected) in enumerate(zip(arrays, reference)):
        if array.shape != expected.shape:
            return f"array {index} has shape {array.shape}, expected {expected.shape}"
        if array.dtype != expected.dtype:
            return f"array {index} has dtype {array.dtype}, expected {expected.dtype}"
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            return f"array {index} has non-finite values"
    if max_norm is not None:
        base = reference if origin is None else origin
        norm = update_norm(arrays[: len(base)], base)
        if norm > max_norm:
            return f"update norm ||w_k - w_global|| = {norm:.3g} exceeds max-update-norm={max_norm:.3g}"
    return None


def update_norm(arrays: list[np.ndarray], origin: list[np.ndarray]) -> float:
    """``sqrt(sum_i ||a_i - o_i||^2)`` over the floating-point arrays, in float64."""
    total = 0.0
    for array, start in zip(arrays, origin):
        if np.issubdtype(array.dtype, np.floating):
            total += float(np.sum(np.square(array.astype(np.float64) - start.astype(np.float64))))
    return float(np.sqrt(total))


def short_reason(cause: BaseException | str, limit: int = 400) -> str:
    """The gist of a client error: Flower wraps a ClientApp's exception in a long remote traceback."""
    text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    marker = "occurred. Message:"
    if marker in text:  # "... Exception ClientAppException occurred. Message: <the client's message>'>)..."
        text = "ClientApp raised: " + text.rsplit(marker, 1)[1].strip().split("'>", 1)[0].strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_failure(failure: Any) -> str:
    """A failed reply without a known client: the exception, or the node id and its status message."""
    if isinstance(failure, BaseException):
        return repr(failure)
    proxy, res = failure
    return f"node {proxy.cid}: {res.status.message}"
