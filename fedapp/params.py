"""Which tensors of a model travel between clients and server, and how they are read and written.

Parameters travel as a list of numpy arrays in the fixed order of ``state_dict`` keys. Frozen
tensors (ETF prototypes, SSE-C) are non-persistent buffers and are never in ``state_dict``; BN's
``num_batches_tracked`` counters stay local (they do not affect the forward pass).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn


def shared_keys(model: nn.Module, exclude_prefixes: Iterable[str] = ()) -> list[str]:
    """``state_dict`` keys that travel: all but BN counters and keys under ``exclude_prefixes``."""
    prefixes = tuple(exclude_prefixes)
    return [
        key for key in model.state_dict()
        if not key.endswith("num_batches_tracked") and not (prefixes and key.startswith(prefixes))
    ]


def get_arrays(model: nn.Module, keys: Sequence[str]) -> list[np.ndarray]:
    """The tensors named by ``keys`` as numpy arrays (copies, on the CPU)."""
    state = model.state_dict()
    return [state[key].detach().cpu().numpy().copy() for key in keys]


def set_arrays(model: nn.Module, keys: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` into the tensors named by ``keys``; shapes must match exactly."""
    if len(arrays) != len(keys):
        raise ValueError(f"expected {len(keys)} arrays for this model, got {len(arrays)}")
    state = model.state_dict()
    for key, array in zip(keys, arrays):
        if tuple(array.shape) != tuple(state[key].shape):
            raise ValueError(f"array for {key!r} has shape {array.shape}, expected {tuple(state[key].shape)}")
        state[key].copy_(torch.as_tensor(array))


def payload_bytes(arrays: Sequence[np.ndarray]) -> int:
    """Bytes of the array payloads (what an update weighs on the wire, headers excluded)."""
    return int(sum(a.nbytes for a in arrays))


def proximal_term(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i ||p_i - a_i||^2`` over paired tensors, the anchors held constant (no gradient flows to them).

    FedProx adds ``(mu / 2)`` times it to the local loss (anchors: the received global model), Ditto
    ``(lambda / 2)`` times it to the personal objective; the gradient with respect to ``p`` is
    ``2 (p - a)``.
    """
    if len(params) != len(anchors):
        raise ValueError(f"{len(params)} parameters but {len(anchors)} anchors")
    if not params:
        raise ValueError("proximal_term needs at least one tensor")
    total = None
    for param, anchor in zip(params, anchors):
        term = torch.sum((param - anchor.detach()) ** 2)
        total = term if total is None else total + term
    return total
