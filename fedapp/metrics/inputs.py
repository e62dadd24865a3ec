"""Conversion of the metrics' array-like arguments, with one ``ValueError`` naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numeric_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a real-valued numpy array (bool, integer or float dtype)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged nested sequences and the like
        raise ValueError(f"{name} must be array-like of numbers; could not convert it: {error}") from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.bool_)
        or np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold real numbers (bool, int or float); got dtype {array.dtype}")
    return array
