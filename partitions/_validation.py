"""Input checks shared by the partitioners.

Errors name the run-config key (``num-partitions``, ``alpha``, ``class-presence-ratio``,
``min-partition-size``, ``seed``) or the argument, the value received and what is allowed, so a
bad run config fails before any training starts.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: How many times a random partition is redrawn before a ``min-partition-size`` request is
#: declared impossible for the given data and ``alpha``.
MAX_DRAWS = 100


def check_seed(seed: int) -> int:
    """``seed`` as a Python int; must be a non-negative integer (what ``default_rng`` accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: must be an integer >= 0")
    return int(seed)


def check_num_partitions(num_clients: int, num_samples: int) -> int:
    """``num_clients`` as an int in ``[1, num_samples]``."""
    is_int = isinstance(num_clients, numbers.Integral) and not isinstance(num_clients, bool)
    if not is_int or num_clients < 1:
        raise ValueError(f"num-partitions={num_clients!r} is invalid: must be an integer >= 1")
    if num_clients > num_samples:
        raise ValueError(
            f"num-partitions={num_clients} is invalid: more clients than samples ({num_samples}); "
            f"allowed: 1 <= num-partitions <= {num_samples}"
        )
    return int(num_clients)


def check_min_size(min_size: int, num_clients: int, num_samples: int) -> int:
    """``min_size`` as an int with ``0 <= min_size`` and ``min_size * num_clients <= num_samples``."""
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 0:
        raise ValueError(f"min-partition-size={min_size!r} is invalid: must be an integer >= 0")
    if min_size * num_clients > num_samples:
        raise ValueError(
            f"min-partition-size={min_size} is impossible with num-partitions={num_clients} and "
            f"{num_samples} samples: allowed min-partition-size <= {num_samples // num_clients}"
        )
    return int(min_size)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float; the Dirichlet concentration must be finite and > 0."""
    is_real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not is_real or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha={alpha!r} is invalid: must be a finite number > 0")
    return float(alpha)


def check_class_presence_ratio(class_presence_ratio: float) -> float:
    """``class_presence_ratio`` (rho) as a float in ``(0, 1]``."""
    if (
        isinstance(class_presence_ratio, bool)
        or not isinstance(class_presence_ratio, numbers.Real)
        or not 0 < class_presence_ratio <= 1
    ):
        raise ValueError(
            f"class-presence-ratio={class_presence_ratio!r} is invalid: must be a number in (0, 1]"
        )
    return float(class_presence_ratio)


def check_int_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """1-D non-negative integer class ids as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer class ids, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be >= 0, got minimum {labels.min()}")
    return labels.astype(np.int64, copy=False)


def check_label_matrix(label_matrix: np.ndarray, name: str = "label_matrix") -> np.ndarray:
    """A 2-D multi-hot ``(N, C)`` matrix (bool, int or float with values 0/1) as bool."""
    matrix = np.asarray(label_matrix)
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D multi-hot (N, C) matrix with C >= 1, got shape {matrix.shape}"
        )
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (multi-hot), got other values")
    return matrix.astype(bool)
