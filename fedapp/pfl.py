"""Pure pieces of the personalized and long-tail baselines (FedBN, FedPer, FedRep, FedBABU, Ditto,
FedRoD, FedETF, Ratio Loss), unit-tested without Flower.

- Which tensors travel: :func:`batchnorm_prefixes` (FedBN keeps these local), :data:`HEAD_PREFIX`
  (FedPer / FedRep / FedBABU keep the classifier local).
- Losses: :func:`balanced_softmax_loss` (FedRoD's generic head, FedETF); Ditto's proximal term is
  :func:`fedapp.params.proximal_term`, shared with FedProx.
- Ratio Loss monitor: :func:`class_ratio_estimates` and :func:`ratio_loss_weights`.
- Training helpers: :func:`train_only` (freeze everything but some parameters for a phase),
  :func:`recalibrate_batchnorm` (re-estimate BN statistics on data the server holds).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fedapp.loops import make_loader
from fedapp.params import shared_keys

HEAD_PREFIX = "classifier."  # PooledLinearNet's linear head


# ------------------------------------------------------------------------------------ shared keys
def batchnorm_prefixes(model: nn.Module) -> list[str]:
    """``state_dict`` prefixes (with the trailing dot) of every BatchNorm layer of ``model``.

    The trailing dot matters: ``features.1.`` must not also match ``features.10.``.
    """
    return [f"{name}." for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


# --------------------------------------------------------------------------------------- losses
def log_class_prior(class_counts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``log n_c`` per class; absent classes get ``log 1e-8`` (about -18.4), as FedETF's code does.

    A finite value (rather than -inf) keeps every logit finite; the softmax weight it leaves to an
    absent class is ~1e-8 of a one-sample class, i.e. none in practice.
    """
    counts = torch.as_tensor(np.asarray(class_counts), dtype=torch.float32)
    return torch.log(counts.clamp(min=1e-8))


def balanced_softmax_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_counts: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Balanced softmax (Ren et al., 2020), FedRoD's balanced risk for the generic head:

        L = -log( n_y exp(z_y) / sum_c n_c exp(z_c) ) = CE(z + log n, y)

    with ``n_c`` the client's training samples of class c. Training ``z`` under the client's prior
    makes ``z`` itself estimate the class-balanced posterior.
    """
    prior = log_class_prior(class_counts).to(logits.device, logits.dtype)
    return F.cross_entropy(logits + prior, targets)



# --------------------------------------------------------------------------- Ratio Loss monitor
def class_ratio_estimates(
    model: nn.Module,
    head_weight: nn.Parameter,
    aux: Sequence[tuple[torch.Tensor, torch.Tensor] | None],
    eps: float = 1e-12,
) -> np.ndarray:
    """Ratio Loss's monitor (Wang et al., 2021): ``Ra_p`` per class from auxiliary data.

    For each class q with auxiliary samples, ``G_q`` is the gradient of the mean cross-entropy on
    those samples with respect to the output layer's weight (``C x d``). For class p,

        Ra_p = | sum_d G_p[p, d] | / | mean_{q != p} sum_d G_q[p, d] |

    i.e. how strongly class p's own samples still pull its output row, relative to how much the
    other classes' samples push it. A class the global model has seen much of is fitted (small
    numerator): small Ra_p; an under-represented class: large Ra_p. The reference code takes the
    element-wise ratio of the rows and then the mean over d; that is 0/0 on every feature a ReLU
    backbone leaves at zero, so this ratio of row sums is used instead (the same quantity when the
    rows are proportional, which they are for a pooled linear head: both are multiples of the
    mean feature vector).

    ``aux[c]`` is ``(images, labels)`` of class c or ``None`` when the server holds no sample of c;
    such classes get the largest estimate of the others (they are too rare to appear at all) and
    are left out of the others' denominators. The model is evaluated in eval mode, so BN running
    statistics are not touched.
    """
    num_classes = len(aux)
    was_training = model.training
    model.eval()
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # sums[q, p] = sum_d G_q[p, d]
    present = [c for c, batch in enumerate(aux) if batch is not None and len(batch[1])]
    if len(present) < 2:
        raise ValueError(f"the Ratio Loss monitor needs auxiliary samples of >= 2 classes, got {len(present)}")
    device = head_weight.device
    for q in present:
        images, labels = aux[q]
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        (grad,) = torch.autograd.grad(loss, [head_weight])
        sums[q] = grad.detach().sum(dim=1).double().cpu()
    model.train(was_training)
    ra = np.full(num_classes, np.nan)
    for p in present:
        others = [q for q in present if q != p]
        numerator = abs(float(sums[p, p]))
        denominator = abs(float(sums[others, p].mean()))
        ra[p] = numerator / max(denominator, eps)
    ra[np.isnan(ra)] = np.nanmax(ra)
    return ra


def ratio_loss_weights(ra: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Ratio Loss's class weights ``alpha + beta * Ra_c`` for a weighted cross-entropy.

    Used as ``CrossEntropyLoss(weight=w)`` (mean reduction divides by the summed weight of the
    batch's targets), so only the relative size of the weights changes training.
    """
    weights = alpha + beta * np.asarray(ra, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"Ratio Loss class weights must be finite and > 0, got {weights}")
    return weights


def auxiliary_batches(
    dataset: Dataset, labels: np.ndarray, num_classes: int, per_class: int
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Up to ``per_class`` samples of each class of ``dataset`` (the first ones, deterministic)."""
    batches: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for c in range(num_classes):
        index = np.flatnonzero(np.asarray(labels) == c)[:per_class]
        if len(index) == 0:
            batches.append(None)
            continue
        items = [dataset[int(i)] for i in index]
        batches.append((torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])))
    return batches


# ----------------------------------------------------------------------------- training helpers
@contextlib.contextmanager
def train_only(model: nn.Module, trainable: Callable[[str], bool]) -> Iterator[list[nn.Parameter]]:
    """Within the block only the parameters whose name satisfies ``trainable`` require gradients.

    Yields those parameters (for the optimizer) and restores every ``requires_grad`` flag after.
    """
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trainable(name))
        if parameter.requires_grad:
            chosen.append(parameter)
    try:
        yield chosen
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(saved[name])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> None:
    """Re-estimate every BN layer's running mean/variance on ``dataset`` (cumulative average).

    Affine parameters are untouched. Used where the server holds no BN statistics of its own
    (FedBN keeps them on the clients).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(dataset) == 0:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch counts equally
    was_training = model.training
    model.train()
    for images, _ in make_loader(dataset, batch_size, shuffle=False):
        model(images.to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)


def seeded_linear_(layer: nn.Linear, seed: int) -> nn.Linear:
    """Re-initialise ``layer`` as PyTorch's default Linear init, from ``seed`` only.

    Every process that calls this with the same seed gets the same weights, so a frozen random
    head (FedBABU) is identical on the server and on all clients without ever travelling.
    """
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        # kaiming_uniform_(a=sqrt(5)) on a Linear weight is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
        if layer.bias is not None:
            layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))
    return layer


def body_keys(model: nn.Module) -> list[str]:
    """Every shared tensor but the classifier head's (FedPer, FedRep, FedBABU: the head stays local)."""
    return shared_keys(model, exclude_prefixes=[HEAD_PREFIX])


@torch.no_grad()
def pooled_features(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.features`` of every sample of ``dataset`` (eval mode) and the labels (FedETF, FedLoGe)."""
    model.eval()
    features, labels = [], []
    for images, targets in make_loader(dataset, batch_size, shuffle=False):
        features.append(model.features(images.to(device)))
        labels.append(targets.to(device))
    return torch.cat(features), torch.cat(labels)
