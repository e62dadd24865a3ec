"""Arrays that travel *beside* the model (SCAFFOLD's control variates, FedCurv's Fisher terms).

Such algorithms send one list of arrays: first the model's shared tensors in the order of
the algorithm's ``shared_keys`` (what :func:`fedapp.params.get_arrays` gives), then extra arrays, one per
*trainable* shared tensor (a gradient, a variate or a Fisher diagonal is defined for parameters,
not for buffers such as BatchNorm's running statistics). These helpers name and split that list,
and flatten a list of arrays into one vector for ``context.state``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn


def trainable_keys(model: nn.Module, keys: Sequence[str]) -> list[str]:
    """The names in ``keys`` that are parameters with ``requires_grad``, in the order of ``keys``."""
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    return [key for key in keys if key in trainable]


def trainable_zeros(model: nn.Module, keys: Sequence[str]) -> list[np.ndarray]:
    """float32 zeros shaped like each tensor named by :func:`trainable_keys`."""
    state = model.state_dict()
    return [np.zeros(tuple(state[key].shape), dtype=np.float32) for key in trainable_keys(model, keys)]


def split_payload(arrays: Sequence[np.ndarray], num_model_arrays: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(model arrays, extra arrays)`` of a payload whose first ``num_model_arrays`` are the model."""
    if len(arrays) < num_model_arrays:
        raise ValueError(f"expected at least {num_model_arrays} arrays (the model), got {len(arrays)}")
    return list(arrays[:num_model_arrays]), list(arrays[num_model_arrays:])


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays as one float32 vector (how a list of private arrays is kept in ``context.state``)."""
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The inverse of :func:`flatten` for arrays shaped like ``like``."""
    sizes = [int(np.prod(a.shape)) for a in like]
    if vector.size != sum(sizes):
        raise ValueError(f"stored vector has {vector.size} values, expected {sum(sizes)} for these shapes")
    pieces = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1]) if sizes else []
    return [piece.reshape(a.shape).copy() for piece, a in zip(pieces, like)]
