"""FedNCAlign-ML training losses (paper Eq. 5-9), pure functions over tensors, in two formulations.

Notation: class-specific features h_ic (``class_features`` ``(B, C, d)``), multi-hot targets y_ic
(``(B, C)``), fixed prototypes w_j (columns of ``prototypes`` ``(d, C)``), the ETF classifier's
logits z_icj = s <h_ic, w_j> + b_j of feature h_ic against class j (``class_logits`` ``(B, C, C)``),
the BCE logit z_ic = z_icc, and the cosine s_icj = cos(h_ic, w_j). Negative pairs
N = {(i, c): y_ic = 0}, positive pairs P = {(i, c): y_ic = 1}.

``authors`` (the default) follows the authors' released code (github CanPeng123/multi_label_fl_fednca,
``loss/binary_ce_w_reject_n_feature_contrastive_loss.py``, loss type
``binary_ce_w_dual_reg_rejection_n_contrastive_topK_PSC`` in ``run_bash/fednca.sh``). Every term is a
per-sample sum averaged over the batch::

    L_BCE = 1/B sum_i sum_c [-y_ic log sigma(z_ic) - (1 - y_ic) log(1 - sigma(z_ic))]     (Eq. 5)
    m_ic  = max_j z_icj                      (the most confident logit of a negative feature)
    K     = |P|;  N_K = the K pairs of N with the largest m_ic (all of N if |N| < K)
    L_rej = 1/B sum_{(i,c) in N_K} max(0, sigma(m_ic) - tau),          tau = 0.3   (Eq. 6-7)
    L_con = 1/B sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) ),  T = 0.07  (Eq. 8)
    L     = L_BCE + lambda_rej L_rej + lambda_con L_con,  lambda_rej = 0.01, lambda_con = 1  (Eq. 9)

(their ``--hyparam_rejection_loss 0.01 --hyparam_contractive_loss 1``, ``rejection_margin=0.3``,
``tau=0.07`` in ``compute_psc_loss``). A batch without positive pairs gives L_rej = L_con = 0, as
in their code. :func:`warmup_factors` is their optional ramp of the two weights (off by default).

``mean-cosine`` is this project's earlier reading of the paper (whose equations were lost in the
text extraction), kept so that its numbers stay reproducible: means instead of per-sample sums and a
cosine hinge on every prototype instead of the sigmoid of the top logit::

    L_BCE = 1/(B C) sum_ic BCE(z_ic, y_ic)
    L_rej = 1/(|N| C) sum_{(i,c) in N} sum_j max(0, s_icj - tau)                  tau = 0.5
    L_con = 1/|P| sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) )  T = 0.2
    L     = L_BCE + lambda_rej L_rej + lambda_con L_con,  lambda_rej = lambda_con = 1

Its choices: cosine similarity; the hinge averaged over all negative pairs and prototypes (0, not
0/0, when nothing violates); tau = 0.5 above the 1/(C-1) cosine of the ideal negative -w_c to the
other prototypes; T = 0.2 chosen on validation (ml-digits skewed, seeds 0-1). Under it L_rej stays
small for a whole run, so it hardly acts (``docs/results/README.md``, appendix). Under both forms an
empty set of pairs gives exactly 0, still attached to the graph.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

LossForm = Literal["authors", "mean-cosine"]
LOSS_FORMS: tuple[str, ...] = get_args(LossForm)

# The released script's values (the authors' formulation).
AUTHORS_TAU = 0.3  # margin on sigmoid(max logit) of a negative feature
AUTHORS_TEMPERATURE = 0.07
AUTHORS_LAMBDA_REJECTION = 0.01
AUTHORS_LAMBDA_CONTRASTIVE = 1.0
# This project's earlier reading (the mean-cosine formulation).
MEAN_COSINE_TAU = 0.5  # cosine threshold
MEAN_COSINE_TEMPERATURE = 0.2
MEAN_COSINE_LAMBDA_REJECTION = 1.0
MEAN_COSINE_LAMBDA_CONTRASTIVE = 1.0
# Warm-up ramps of the authors' code: fractions of the run over which each weight goes 0 -> 1.
CONTRASTIVE_RAMP = (0.2, 0.6)
REJECTION_RAMP = (0.6, 0.9)


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


def _check_weights(lambda_rejection: float, lambda_contrastive: float) -> None:
    if lambda_rejection < 0.0 or lambda_contrastive < 0.0:
        raise ValueError(
            f"loss weights must be >= 0, got lambda_rejection={lambda_rejection}, lambda_contrastive={lambda_contrastive}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_cosine_tau(tau: float) -> None:
    if not -1.0 <= tau < 1.0:
        raise ValueError(f"tau is a cosine threshold in [-1, 1), got {tau}")


def _require_prototypes(prototypes: torch.Tensor | None) -> torch.Tensor:
    if prototypes is None:
        raise ValueError("the rejection/contrastive losses need the ETF prototypes (classifier='etf')")
    return prototypes


def _own_class_log_likelihood(cosines: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum_{(i,c) in P} log( exp(s_icc / T) / sum_j exp(s_icj / T) ): ``positive`` is y as a float (B, C)."""
    log_probs = torch.log_softmax(cosines / temperature, dim=-1)
    own_class = torch.diagonal(log_probs, dim1=1, dim2=2)  # (B, C): log p(j = c | h_ic)
    return (own_class * positive).sum()


def _weighted_total(
    bce: torch.Tensor, rejection: torch.Tensor, contrastive: torch.Tensor,
    lambda_rejection: float, lambda_contrastive: float, warmup: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_BCE + f_rej lambda_rej L_rej + f_con lambda_con L_con, and the detached terms."""
    rejection_factor, contrastive_factor = warmup  # 1.0 * lambda is lambda exactly: no warm-up, no change
    total = (bce + (rejection_factor * lambda_rejection) * rejection
             + (contrastive_factor * lambda_contrastive) * contrastive)
    terms = {"bce": bce.detach(), "rejection": rejection.detach(), "contrastive": contrastive.detach()}
    return total, terms


def prototype_cosines(class_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """s_icj = cos(h_ic, w_j): ``(B, C, d)`` features x ``(d, C)`` prototypes -> ``(B, C, C)``."""
    # (h @ w_hat) / |h| is cos(h, w): one division of the (B, C, C) result instead of normalising
    # the (B, C, d) features first (fewer autograd nodes per training step).
    unit = prototypes / prototypes.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return (class_features @ unit) / class_features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------ the authors' formulation
def bce_sum_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_BCE = 1/B sum_i sum_c BCE-with-logits(z_ic, y_ic): summed over classes, averaged over samples."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (B, C)")
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return per_entry.sum(dim=1).mean()


def topk_rejection_loss(class_logits: torch.Tensor, targets: torch.Tensor, tau: float = AUTHORS_TAU) -> torch.Tensor:
    """L_rej = 1/B sum_{(i,c) in N_K} max(0, sigmoid(max_j z_icj) - tau), K = |P| (module docstring).

    ``class_logits`` ``(B, C, C)``: entry (i, c, j) is the logit of class feature h_ic for class j.
    The K negative pairs with the largest max-logit are kept (ties broken by ``torch.topk``). An
    all-positive batch gives 0 (the authors' code would index an empty pair list there).
    """
    if class_logits.dim() != 3 or class_logits.shape[:2] != targets.shape:
        raise ValueError(
            f"class_logits must be (B, C, C) for targets (B, C) = {tuple(targets.shape)}, "
            f"got {tuple(class_logits.shape)}"
        )
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau is a margin on a sigmoid probability in [0, 1), got {tau}")
    max_logit = class_logits.max(dim=-1).values  # (B, C): m_ic
    negatives = max_logit[targets == 0]  # row-major, like the authors' leftover pairs
    num_positive = int((targets != 0).sum())
    if negatives.numel() > num_positive:
        negatives = torch.topk(negatives, num_positive).values
    return torch.relu(torch.sigmoid(negatives) - tau).sum() / targets.shape[0]


def prototype_contrastive_loss(
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = AUTHORS_TEMPERATURE,
) -> torch.Tensor:
    """L_con = 1/B sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) ) (the authors' "PSC")."""
    _check_inputs(class_features, targets, prototypes)
    _check_temperature(temperature)
    return _contrastive_sum(prototype_cosines(class_features, prototypes), targets, temperature)


def _contrastive_sum(cosines: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    return -_own_class_log_likelihood(cosines, targets.to(cosines.dtype), temperature) / targets.shape[0]


def ramp(progress: float, start: float, end: float) -> float:
    """0 up to ``start``, 1 from ``end``, linear in between."""
    if progress <= start:
        return 0.0
    if progress >= end:
        return 1.0
    return (progress - start) / (end - start)


def warmup_factors(server_round: int, num_rounds: int) -> tuple[float, float]:
    """(rejection, contrastive) multipliers of the weights in round ``server_round`` (1-based).

    p = (server_round - 1) / max(1, num_rounds - 1); contrastive = ramp(p, 0.2, 0.6), rejection =
    ramp(p, 0.6, 0.9), as the authors' ``reg_warm_up``. Their trainer passes the *local epoch* index
    as the round (so with 1 local epoch the weights would stay 0); the ramp over rounds is what the
    option is named for, so rounds are used here.
    """
    progress = (server_round - 1) / max(1, num_rounds - 1)
    return ramp(progress, *REJECTION_RAMP), ramp(progress, *CONTRASTIVE_RAMP)


def authors_loss(
    logits: torch.Tensor,
    class_logits: torch.Tensor | None,
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor | None,
    lambda_rejection: float = AUTHORS_LAMBDA_REJECTION,
    lambda_contrastive: float = AUTHORS_LAMBDA_CONTRASTIVE,
    tau: float = AUTHORS_TAU,
    temperature: float = AUTHORS_TEMPERATURE,
    warmup: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_BCE + f_rej lambda_rej L_rej + f_con lambda_con L_con, the authors' form (module docstring).

    ``warmup`` = (f_rej, f_con) from :func:`warmup_factors` (1, 1 without warm-up). A term whose
    lambda is 0 is not computed (reported as 0), so the ablation rows without LADM or without an ETF
    (``class_logits``/``prototypes`` None) pass both lambdas 0. A term whose lambda is > 0 is
    computed and reported unweighted even while its warm-up factor is 0. Returns the total (with
    gradient) and the detached terms ``{"bce", "rejection", "contrastive"}``.
    """
    _check_weights(lambda_rejection, lambda_contrastive)
    bce = bce_sum_loss(logits, targets)
    zero = logits.new_zeros(())
    rejection, contrastive = zero, zero
    if lambda_rejection > 0.0 or lambda_contrastive > 0.0:
        prototypes = _require_prototypes(prototypes)
        _check_inputs(class_features, targets, prototypes, values=False)
        if lambda_rejection > 0.0:
            if class_logits is None:
                raise ValueError("the rejection loss needs the ETF classifier's (B, C, C) class logits")
            rejection = topk_rejection_loss(class_logits, targets, tau)
        if lambda_contrastive > 0.0:
            _check_temperature(temperature)
            contrastive = _contrastive_sum(prototype_cosines(class_features, prototypes), targets, temperature)
    return _weighted_total(bce, rejection, contrastive, lambda_rejection, lambda_contrastive, warmup)


# -------------------------------------------------------------- the mean-cosine formulation
def mean_cosine_rejection_loss(
    class_features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, tau: float = MEAN_COSINE_TAU
) -> torch.Tensor:
    """L_rej = 1/(|N| C) sum_{(i,c) in N} sum_j max(0, s_icj - tau) (mean-cosine form)."""
    _check_inputs(class_features, targets, prototypes)
    _check_cosine_tau(tau)
    return _rejection_from_cosines(prototype_cosines(class_features, prototypes), targets, tau)


def _rejection_from_cosines(cosines: torch.Tensor, targets: torch.Tensor, tau: float) -> torch.Tensor:
    negative = 1.0 - targets.to(cosines.dtype)  # (B, C): 1 on negative pairs
    hinge = torch.relu(cosines - tau).sum(dim=-1)  # (B, C): sum_j max(0, s_icj - tau)
    count = negative.sum() * cosines.shape[1]
    return (hinge * negative).sum() / count.clamp_min(1.0)


def mean_cosine_contrastive_loss(
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = MEAN_COSINE_TEMPERATURE,
) -> torch.Tensor:
    """L_con = 1/|P| sum_{(i,c) in P} -log( exp(s_icc / T) / sum_j exp(s_icj / T) ) (mean-cosine form)."""
    _check_inputs(class_features, targets, prototypes)
    _check_temperature(temperature)
    return _contrastive_from_cosines(prototype_cosines(class_features, prototypes), targets, temperature)


def _contrastive_from_cosines(cosines: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    positive = targets.to(cosines.dtype)  # (B, C): 1 on positive pairs
    return -_own_class_log_likelihood(cosines, positive, temperature) / positive.sum().clamp_min(1.0)


def mean_cosine_loss(
    logits: torch.Tensor,
    class_features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor | None,
    lambda_rejection: float = MEAN_COSINE_LAMBDA_REJECTION,
    lambda_contrastive: float = MEAN_COSINE_LAMBDA_CONTRASTIVE,
    tau: float = MEAN_COSINE_TAU,
    temperature: float = MEAN_COSINE_TEMPERATURE,
    warmup: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = mean BCE + f_rej lambda_rej L_rej + f_con lambda_con L_con, the mean-cosine form.

    BCE-with-logits averaged over the B samples and C classes. Lambdas of 0, ``warmup`` and the
    returned terms as in :func:`authors_loss`.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (B, C)")
    _check_weights(lambda_rejection, lambda_contrastive)
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    zero = logits.new_zeros(())
    rejection, contrastive = zero, zero
    if lambda_rejection > 0.0 or lambda_contrastive > 0.0:
        prototypes = _require_prototypes(prototypes)
        # Shapes only: the multi-hot check costs a pass over the targets at every training step,
        # and the datasets already guarantee 0/1 targets (the public terms above do check).
        _check_inputs(class_features, targets, prototypes, values=False)
        _check_cosine_tau(tau)
        _check_temperature(temperature)
        cosines = prototype_cosines(class_features, prototypes)  # once for both terms
        if lambda_rejection > 0.0:
            rejection = _rejection_from_cosines(cosines, targets, tau)
        if lambda_contrastive > 0.0:
            contrastive = _contrastive_from_cosines(cosines, targets, temperature)
    return _weighted_total(bce, rejection, contrastive, lambda_rejection, lambda_contrastive, warmup)
