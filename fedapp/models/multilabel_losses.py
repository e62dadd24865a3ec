"""FedNCAlign-ML training losses (paper Eq. 5-9), pure functions over tensors.

Notation: class-specific features h_ic (``class_features`` ``(B, C, d)``), multi-hot targets
y_ic (``(B, C)``), fixed prototypes w_j (columns of ``prototypes`` ``(d, C)``), and the cosine
s_icj = cos(h_ic, w_j). Negative pairs N = {(i, c): y_ic = 0}, positive pairs P = {(i, c): y_ic = 1}.

    L_BCE = -1/(B C) sum_ic [y_ic log sigma(z_ic) + (1 - y_ic) log(1 - sigma(z_ic))]       (Eq. 5)
    L_rej = 1/(|N| C) sum_{(i,c) in N} sum_j max(0, s_icj - tau)                           (Eq. 6-7)
    L_con = 1/|P| sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) )           (Eq. 8)
    L     = L_BCE + lambda_rejection L_rej + lambda_contrastive L_con                      (Eq. 9)

Choices where the paper is silent (its equations were lost):
- similarity = cosine (prototypes are unit vectors; the features are not normalised elsewhere);
- L_rej averages the hinge over *all* negative pairs and prototypes (violations and non-violations
  alike), not over violating entries only: it is continuous in the features, its gradient per
  violation does not jump as the number of violators changes, and it is 0 (not 0/0) when nothing
  violates; entries with s <= tau contribute exactly 0, which is the paper's "threshold filters
  out negative features with low similarity";
- default tau = 0.5: an ideal negative for class c under the ETF classifier points along -w_c,
  whose cosine to every other prototype is +1/(C-1) (0.11 for C=10, 0.17 for C=7); any tau below
  that (e.g. 0) penalises the ideal negative, which is how a naive reading hurt macro-AUC;
- default T = 0.2, chosen on the validation split of the federated run (ml-digits, alpha 0.5,
  rho 0.5, 10 clients, 20 rounds, seeds 0-1: val macro-AUC at the val-selected round 0.9974 vs
  0.9948 at T = 0.5, a difference within seed noise); T = 0.1 hurt in an IID probe (METHODS.md);
- default weights lambda_rejection = 1 (the paper's value for composite images; use 0.01 for
  complex backgrounds such as VOC / ChestX-ray14) and lambda_contrastive = 1 (fixed in the paper).
  Evidence is mixed; tune per dataset. Skewed pure-torch FedAvg probe on ml-digits (10 clients,
  5 allowed classes each, 10 rounds x 2 local epochs, LADM + ETF, AdamW lr 3e-3, one seed), test
  macro-AUC final (best): SmallCNN width 32: BCE 0.915 (0.915), +L_con(1, T=0.5) 0.982 (0.982),
  +L_con(1, T=0.1) 0.966, +L_con(0.1) 0.922, +L_rej(1, tau=0.5) alone 0.913, both at 1 0.982;
  SmallCNN width 16: BCE 0.983 (0.983), +L_con(1) 0.976 (0.986, reached by round 4), both at 1
  0.977 (0.984). L_con mainly speeds up early rounds. L_rej at tau=0.5 stays ~1e-3 (tau 0.2 / 0
  changed the width-32 result by < 0.003): at this tau it guards against confident false
  positives rather than driving training;
- an empty set of pairs (all-positive batch for L_rej, all-negative for L_con) gives exactly 0,
  still attached to the graph (sum over an empty mask divided by max(count, 1)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TAU = 0.5
DEFAULT_TEMPERATURE = 0.2
DEFAULT_LAMBDA_REJECTION = 1.0
DEFAULT_LAMBDA_CONTRASTIVE = 1.0


def _check_inputs(
    class_features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, values: bool = True
) -> None:
    if class_features.dim() != 3:
        raise ValueError(
            f"class_features must be (B, C, d) per-class features (from LADM), got {tuple(class_features.shape)}"
        )
    batch, num_classes, dim = class_features.shape
    if targets.shape != (batch, num_classes):
        raise ValueError(f"targets must be ({batch}, {num_classes}) multi-hot, got {tuple(targets.shape)}")
    if prototypes.shape != (dim, num_classes):
        raise ValueError(f"prototypes must be (d, C) = ({dim}, {num_classes}), got {tuple(prototypes.shape)}")
    if values and not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError("targets must be multi-hot: every entry 0 or 1")


def prototype_cosines(class_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """s_icj = cos(h_ic, w_j): ``(B, C, d)`` features x ``(d, C)`` prototypes -> ``(B, C, C)``."""
    # (h @ w_hat) / |h| is cos(h, w): one division of the (B, C, C) result instead of normalising
    # the (B, C, d) features first (fewer autograd nodes per training step).
    unit = prototypes / prototypes.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return (class_features @ unit) / class_features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def rejection_loss(
    class_features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, tau: float = DEFAULT_TAU
) -> torch.Tensor:
    """Negative-feature rejection (Eq. 6-7): 1/(|N| C) sum_{(i,c) in N} sum_j max(0, s_icj - tau)."""
    _check_inputs(class_features, targets, prototypes)
    if not -1.0 <= tau < 1.0:
        raise ValueError(f"tau is a cosine threshold in [-1, 1), got {tau}")
    return _rejection_from_cosines(prototype_cosines(class_features, prototypes), targets, tau)


def _rejection_from_cosines(cosines: torch.Tensor, targets: torch.Tensor, tau: float) -> torch.Tensor:
    negative = 1.0 - targets.to(cosines.dtype)  # (B, C): 1 on negative pairs
    hinge = torch.relu(cosines - tau).sum(dim=-1)  # (B, C): sum_j max(0, s_icj - tau)
    count = negative.sum() * cosines.shape[1]
    return (hinge * negative).sum() / count.clamp_min(1.0)


def contrastive_loss(
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """Positive-feature InfoNCE over prototypes (Eq. 8), averaged over positive pairs.

    1/|P| sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) ).
    """
    _check_inputs(class_features, targets, prototypes)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _contrastive_from_cosines(prototype_cosines(class_features, prototypes), targets, temperature)


def _contrastive_from_cosines(cosines: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    positive = targets.to(cosines.dtype)  # (B, C): 1 on positive pairs
    log_probs = torch.log_softmax(cosines / temperature, dim=-1)
    own_class = torch.diagonal(log_probs, dim1=1, dim2=2)  # (B, C): log p(j = c | h_ic)
    return -(own_class * positive).sum() / positive.sum().clamp_min(1.0)


def fedncalign_loss(
    logits: torch.Tensor,
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor | None,
    lambda_rejection: float = DEFAULT_LAMBDA_REJECTION,
    lambda_contrastive: float = DEFAULT_LAMBDA_CONTRASTIVE,
    tau: float = DEFAULT_TAU,
    temperature: float = DEFAULT_TEMPERATURE,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 9: L = BCE(logits, targets) + lambda_rejection * L_rej + lambda_contrastive * L_con.

    BCE-with-logits is averaged over the B samples and C classes. A term whose lambda is 0 is not
    computed (reported as 0), so the ablation rows without LADM (pooled ``(B, d)`` features) or
    without an ETF (``prototypes=None``) use this function with both lambdas 0. Returns the total
    (with gradient) and the detached terms ``{"bce", "rejection", "contrastive"}`` for logging.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (B, C)")
    if lambda_rejection < 0.0 or lambda_contrastive < 0.0:
        raise ValueError(
            f"loss weights must be >= 0, got lambda_rejection={lambda_rejection}, lambda_contrastive={lambda_contrastive}"
        )
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    zero = logits.new_zeros(())
    rejection, contrastive = zero, zero
    if lambda_rejection > 0.0 or lambda_contrastive > 0.0:
        if prototypes is None:
            raise ValueError("the rejection/contrastive losses need the ETF prototypes (classifier='etf')")
        # Shapes only: the multi-hot check costs a pass over the targets at every training step,
        # and the datasets already guarantee 0/1 targets (the public terms above do check).
        _check_inputs(class_features, targets, prototypes, values=False)
        if not -1.0 <= tau < 1.0:
            raise ValueError(f"tau is a cosine threshold in [-1, 1), got {tau}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cosines = prototype_cosines(class_features, prototypes)  # once for both terms
        if lambda_rejection > 0.0:
            rejection = _rejection_from_cosines(cosines, targets, tau)
        if lambda_contrastive > 0.0:
            contrastive = _contrastive_from_cosines(cosines, targets, temperature)
    total = bce + lambda_rejection * rejection + lambda_contrastive * contrastive
    terms = {"bce": bce.detach(), "rejection": rejection.detach(), "contrastive": contrastive.detach()}
    return total, terms
