"""FedNCAlign-ML losses against hand-computed tiny cases (prototypes = the standard basis of R^3).

The authors' formulation (the default) is also checked against a direct numpy transcription of
their procedure (pairs, set difference, top-K); the mean-cosine formulation (this project's earlier
reading) keeps its hand-computed cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedapp.models.etf import simplex_etf
from fedapp.models.multilabel_losses import (
    authors_loss,
    bce_sum_loss,
    mean_cosine_contrastive_loss,
    mean_cosine_loss,
    mean_cosine_rejection_loss,
    prototype_contrastive_loss,
    prototype_cosines,
    ramp,
    topk_rejection_loss,
    warmup_factors,
)

# Prototypes w_j = e_j (columns of I_3); scaling them must not matter (cosine).
PROTOTYPES = torch.eye(3)
TARGETS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])


def features() -> torch.Tensor:
    """Rows chosen so that the cosines to e_1, e_2, e_3 are exact decimals.

    sample 0 (y = 1 0 0): h00 = (2,0,0) -> s = (1, 0, 0)       positive
                          h01 = (3,4,0) -> s = (.6, .8, 0)     negative
                          h02 = (0,0,-1) -> s = (0, 0, -1)     negative
    sample 1 (y = 0 1 1): h10 = (0,3,4) -> s = (0, .6, .8)     negative
                          h11 = (0,1,0) -> s = (0, 1, 0)       positive
                          h12 = (1,0,1) -> s = (.7071, 0, .7071) positive
    """
    return torch.tensor(
        [
            [[2.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, -1.0]],
            [[0.0, 3.0, 4.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]],
        ],
        requires_grad=True,
    )


def test_prototype_cosines_hand_computed() -> None:
    s = prototype_cosines(features(), 5.0 * PROTOTYPES)
    torch.testing.assert_close(s[0, 1], torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(s[1, 2], torch.tensor([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)]))


def test_mean_cosine_rejection_loss_hand_computed() -> None:
    # tau = 0.5: hinges h01 -> (.1, .3, 0), h02 -> (0, 0, 0), h10 -> (0, .1, .3); 3 negatives x 3 prototypes.
    loss = mean_cosine_rejection_loss(features(), TARGETS, PROTOTYPES, tau=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.8 / 9))
    # tau = 0.7: only .8 - .7 from h01 and from h10 survive.
    torch.testing.assert_close(mean_cosine_rejection_loss(features(), TARGETS, PROTOTYPES, tau=0.7), torch.tensor(0.2 / 9))
    # Scaling prototypes or features does not change a cosine loss.
    torch.testing.assert_close(
        mean_cosine_rejection_loss(3.0 * features(), TARGETS, 2.0 * PROTOTYPES, tau=0.5), torch.tensor(0.8 / 9)
    )


def test_mean_cosine_rejection_similarities_below_tau_contribute_nothing() -> None:
    # Every cosine of every negative is <= 0.8, so tau = 0.8 leaves nothing, and no gradient.
    h = features()
    loss = mean_cosine_rejection_loss(h, TARGETS, PROTOTYPES, tau=0.8)
    assert loss.item() == 0.0
    loss.backward()
    assert h.grad is not None and torch.count_nonzero(h.grad) == 0


def test_mean_cosine_rejection_gradient_reaches_only_violating_negatives() -> None:
    h = features()
    mean_cosine_rejection_loss(h, TARGETS, PROTOTYPES, tau=0.5).backward()
    assert h.grad is not None
    moved = h.grad.abs().sum(dim=-1) > 0  # (B, C): which class features get a gradient
    # Positives (0,0), (1,1), (1,2) and the sub-threshold negative (0,2) get none.
    assert moved.tolist() == [[False, True, False], [True, False, False]]


def test_mean_cosine_rejection_ideal_etf_negative_is_not_penalised_at_the_default_tau() -> None:
    # Under the ETF classifier the ideal negative of class c is -w_c: cos to w_j (j != c) is 1/(C-1).
    etf = simplex_etf(4, 8, seed=0)
    h = -etf.T.unsqueeze(0)  # (1, C, d): every class feature is the ideal negative
    zeros = torch.zeros(1, 4)
    assert mean_cosine_rejection_loss(h, zeros, etf).item() == 0.0  # default tau = 0.5 > 1/3
    # tau = 0: each of the 4 negatives has 3 prototypes at cosine 1/3 -> 4 * 3 * (1/3) / (4 * 4) = 0.25.
    torch.testing.assert_close(mean_cosine_rejection_loss(h, zeros, etf, tau=0.0), torch.tensor(0.25))


def test_mean_cosine_rejection_all_positive_batch_is_exactly_zero_with_a_gradient_path() -> None:
    h = features()
    loss = mean_cosine_rejection_loss(h, torch.ones(2, 3), PROTOTYPES, tau=-1.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and torch.count_nonzero(h.grad) == 0


def test_mean_cosine_contrastive_loss_hand_computed() -> None:
    # T = 0.5. Positives: h00 and h11 have s = (1, 0, 0) up to order: -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2);
    # h12 has s = (r, 0, r), r = 1/sqrt(2): -log(e^{2r} / (2 e^{2r} + 1)) = log(2 + e^{-2r}).
    one_hot_term = math.log(1 + 2 * math.exp(-2.0))  # 0.23954...
    diagonal_term = math.log(2 + math.exp(-math.sqrt(2)))  # 0.80787...
    expected = (2 * one_hot_term + diagonal_term) / 3
    assert expected == pytest.approx(0.42899, abs=1e-5)
    loss = mean_cosine_contrastive_loss(features(), TARGETS, PROTOTYPES, temperature=0.5)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_mean_cosine_contrastive_temperature_one_hand_computed() -> None:
    # A single prototype: the softmax over one entry is 1, the loss 0.
    h = torch.tensor([[[1.0, 0.0, 0.0]]])
    loss = mean_cosine_contrastive_loss(h, torch.tensor([[1.0]]), torch.tensor([[1.0], [0.0], [0.0]]), temperature=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.0))
    # One positive h = e_1 against e_1, e_2, e_3 at T = 1: -log(e / (e + 2)) = log(1 + 2/e).
    h3 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    loss3 = mean_cosine_contrastive_loss(h3, torch.tensor([[1.0, 0.0, 0.0]]), PROTOTYPES, temperature=1.0)
    torch.testing.assert_close(loss3, torch.tensor(math.log(1 + 2 / math.e)))


def test_mean_cosine_contrastive_gradient_reaches_only_positives() -> None:
    h = features()
    mean_cosine_contrastive_loss(h, TARGETS, PROTOTYPES, temperature=0.5).backward()
    assert h.grad is not None
    moved = h.grad.abs().sum(dim=-1) > 0
    assert moved.tolist() == [[True, False, False], [False, True, True]]


def test_mean_cosine_contrastive_all_negative_batch_is_exactly_zero_without_nan() -> None:
    h = features()
    loss = mean_cosine_contrastive_loss(h, torch.zeros(2, 3), PROTOTYPES)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and torch.count_nonzero(h.grad) == 0


def test_mean_cosine_total_is_the_weighted_sum() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]], requires_grad=True)
    h = features()
    total, terms = mean_cosine_loss(
        logits, h, TARGETS, PROTOTYPES, lambda_rejection=0.3, lambda_contrastive=2.0, tau=0.5, temperature=0.5
    )
    # BCE-with-logits per entry: y=1 -> log(1 + e^-z), y=0 -> log(1 + e^z); mean over the 6 entries.
    bce = (
        math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(2.0)) + math.log(1 + math.exp(-1.0))
        + math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(3.0)) + math.log(1 + math.exp(-0.5))
    ) / 6
    torch.testing.assert_close(terms["bce"], torch.tensor(bce))
    torch.testing.assert_close(terms["rejection"], torch.tensor(0.8 / 9))
    torch.testing.assert_close(terms["contrastive"], mean_cosine_contrastive_loss(h, TARGETS, PROTOTYPES, 0.5).detach())
    torch.testing.assert_close(total, terms["bce"] + 0.3 * terms["rejection"] + 2.0 * terms["contrastive"])
    assert not any(term.requires_grad for term in terms.values())
    total.backward()
    assert logits.grad is not None and h.grad is not None


def test_mean_cosine_zero_weights_need_no_prototypes_and_accept_pooled_features() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    pooled = torch.randn(2, 8)
    total, terms = mean_cosine_loss(logits, pooled, TARGETS, None, lambda_rejection=0.0, lambda_contrastive=0.0)
    torch.testing.assert_close(total, torch.nn.functional.binary_cross_entropy_with_logits(logits, TARGETS))
    assert terms["rejection"].item() == 0.0 and terms["contrastive"].item() == 0.0
    with pytest.raises(ValueError, match="need the ETF prototypes"):
        mean_cosine_loss(logits, pooled, TARGETS, None, lambda_rejection=1.0, lambda_contrastive=0.0)
    with pytest.raises(ValueError, match=r"class_features must be \(B, C, d\)"):
        mean_cosine_loss(logits, pooled, TARGETS, torch.eye(8, 3), lambda_rejection=1.0, lambda_contrastive=0.0)


def test_losses_reject_bad_inputs() -> None:
    h = features()
    with pytest.raises(ValueError, match=r"targets must be \(2, 3\)"):
        mean_cosine_rejection_loss(h, torch.zeros(2, 4), PROTOTYPES)
    with pytest.raises(ValueError, match=r"prototypes must be \(d, C\) = \(3, 3\)"):
        mean_cosine_contrastive_loss(h, TARGETS, torch.eye(3, 4))
    with pytest.raises(ValueError, match="every entry 0 or 1"):
        mean_cosine_rejection_loss(h, torch.full((2, 3), 0.5), PROTOTYPES)
    with pytest.raises(ValueError, match="tau is a cosine threshold"):
        mean_cosine_rejection_loss(h, TARGETS, PROTOTYPES, tau=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mean_cosine_contrastive_loss(h, TARGETS, PROTOTYPES, temperature=0.0)
    with pytest.raises(ValueError, match="must both be"):
        mean_cosine_loss(torch.zeros(2, 4), h, TARGETS, PROTOTYPES)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        mean_cosine_loss(torch.zeros(2, 3), h, TARGETS, PROTOTYPES, lambda_rejection=-1.0)


# ------------------------------------------------------------------ the authors' formulation
def reference_topk_rejection(class_logits: np.ndarray, targets: np.ndarray, margin: float) -> float:
    """The authors' procedure transcribed with numpy: positive pairs, leftover (negative) pairs in
    row-major order, the K = |P| most confident leftovers by max logit (all if fewer), the hinge on
    sigmoid(max logit), summed per sample, averaged over the batch."""
    batch, num_classes, _ = class_logits.shape
    positives = {(i, c) for i in range(batch) for c in range(num_classes) if targets[i, c] == 1}
    if not positives:
        return 0.0
    leftovers = [(i, c) for i in range(batch) for c in range(num_classes) if (i, c) not in positives]
    if not leftovers:  # an all-positive batch (their indexing of an empty pair list would fail)
        return 0.0
    max_logit = np.array([class_logits[i, c].max() for i, c in leftovers])
    rows = np.array([i for i, _ in leftovers])
    if len(leftovers) >= len(positives):
        keep = np.argsort(-max_logit, kind="stable")[: len(positives)]
        max_logit, rows = max_logit[keep], rows[keep]
    hinge = np.maximum(0.0, 1.0 / (1.0 + np.exp(-max_logit)) - margin)
    per_sample = np.zeros(batch)
    np.add.at(per_sample, rows, hinge)
    return float(per_sample.mean())


def test_topk_rejection_hand_computed() -> None:
    # 2 samples, 3 classes; targets: 1 positive pair -> K = 1 of the 5 negatives is kept.
    logits = torch.zeros(2, 3, 3)
    logits[0, 1] = torch.tensor([0.0, 2.0, -1.0])  # negative (0, 1): max 2.0  <- the top-1
    logits[0, 2] = torch.tensor([1.0, -3.0, 0.5])  # negative (0, 2): max 1.0
    logits[1, 0] = torch.tensor([-5.0, -4.0, -6.0])  # negative (1, 0): max -4.0, sigmoid < 0.3
    logits[0, 0] = torch.tensor([9.0, 9.0, 9.0])  # positive (0, 0): never a rejection candidate
    one_positive = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (1 / (1 + math.exp(-2.0)) - 0.3) / 2  # one hinge, summed per sample, mean over B = 2
    torch.testing.assert_close(topk_rejection_loss(logits, one_positive, 0.3), torch.tensor(expected))
    # 3 positives -> K = 3 = |N|: all three negatives (0,1), (0,2), (1,0) are kept; sigmoid(-4) < 0.3.
    three = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    kept = [2.0, 1.0, -4.0]
    expected3 = sum(max(0.0, 1 / (1 + math.exp(-m)) - 0.3) for m in kept) / 2
    torch.testing.assert_close(topk_rejection_loss(logits, three, 0.3), torch.tensor(expected3))


@pytest.mark.parametrize("seed, positive_rate", [(0, 0.2), (1, 0.5), (2, 0.8), (3, 0.0), (4, 1.0)])
def test_topk_rejection_matches_the_authors_procedure(seed: int, positive_rate: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    class_logits = 3.0 * torch.randn(6, 5, 5, generator=generator, dtype=torch.float64)
    targets = (torch.rand(6, 5, generator=generator) < positive_rate).double()
    for margin in (0.0, 0.3, 0.7):
        expected = reference_topk_rejection(class_logits.numpy(), targets.numpy(), margin)
        assert topk_rejection_loss(class_logits, targets, margin).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_topk_rejection_is_active_where_the_cosine_hinge_is_not() -> None:
    # Untrained features have small logits: sigmoid(~0) = 0.5 > 0.3, so the authors' term is ~0.2
    # per kept negative from the first step, while a cosine hinge at 0.5 is ~0.
    generator = torch.Generator().manual_seed(0)
    logits = 0.01 * torch.randn(4, 3, 3, generator=generator)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert topk_rejection_loss(logits, targets, 0.3).item() == pytest.approx(4 * 0.2 / 4, abs=0.01)


def test_topk_rejection_gradient_reaches_only_kept_violating_negatives() -> None:
    logits = torch.zeros(2, 3, 3)
    logits[0, 1, 1], logits[0, 2, 0], logits[1, 0, 2] = 2.0, 1.0, -4.0
    logits.requires_grad_(True)
    topk_rejection_loss(logits, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), 0.3).backward()
    assert logits.grad is not None
    moved = (logits.grad != 0).nonzero().tolist()
    assert moved == [[0, 1, 1]]  # only the arg-max logit of the single kept negative


def test_topk_rejection_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"class_logits must be \(B, C, C\)"):
        topk_rejection_loss(torch.zeros(2, 3), TARGETS)
    with pytest.raises(ValueError, match=r"tau is a margin on a sigmoid probability in \[0, 1\)"):
        topk_rejection_loss(torch.zeros(2, 3, 3), TARGETS, tau=1.0)


def test_bce_sum_over_classes_mean_over_samples() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    z, y = logits.numpy().astype(np.float64), TARGETS.numpy()
    per_entry = y * np.log1p(np.exp(-z)) + (1 - y) * np.log1p(np.exp(z))
    expected = per_entry.sum(axis=1).mean()  # = 3x the mean over all 6 entries
    torch.testing.assert_close(bce_sum_loss(logits, TARGETS), torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(
        bce_sum_loss(logits, TARGETS), 3 * torch.nn.functional.binary_cross_entropy_with_logits(logits, TARGETS)
    )


def test_prototype_contrastive_at_t007_hand_computed() -> None:
    # T = 0.07. Positives h00, h11: s = one-hot -> log(1 + 2 e^{-1/T}); h12: s = (r, 0, r) ->
    # log(2 + e^{-r/T}); summed per sample (sample 0: one pair, sample 1: two), mean over B = 2.
    t = 0.07
    one_hot_term = math.log1p(2 * math.exp(-1 / t))
    diagonal_term = math.log(2 + math.exp(-(1 / math.sqrt(2)) / t))
    expected = (one_hot_term + (one_hot_term + diagonal_term)) / 2
    loss = prototype_contrastive_loss(features().double(), TARGETS.double(), PROTOTYPES.double(), temperature=t)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(math.log(2) / 2, abs=1e-4)  # the diagonal pair is ~log 2, the rest ~0


def test_prototype_contrastive_matches_cross_entropy_over_prototypes() -> None:
    # The authors' compute_psc_loss: F.cross_entropy(cos / T, c, reduction='none'), summed per sample.
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(5, 4, 8, generator=generator)
    w = torch.randn(8, 4, generator=generator)
    y = (torch.rand(5, 4, generator=generator) < 0.4).float()
    pairs = y.nonzero()
    cos = torch.nn.functional.normalize(h[pairs[:, 0], pairs[:, 1]], dim=1) @ torch.nn.functional.normalize(w, dim=0)
    per_pair = torch.nn.functional.cross_entropy(cos / 0.07, pairs[:, 1], reduction="none")
    expected = torch.zeros(5).index_add(0, pairs[:, 0], per_pair).mean()
    torch.testing.assert_close(prototype_contrastive_loss(h, y, w, 0.07), expected)


def test_authors_total_is_the_weighted_per_sample_sum() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]], requires_grad=True)
    h = features()
    class_logits = 10.0 * prototype_cosines(h, PROTOTYPES)  # any (B, C, C) tensor with a graph
    total, terms = authors_loss(logits, class_logits, h, TARGETS, PROTOTYPES, 0.01, 1.0, 0.3, 0.07)
    torch.testing.assert_close(terms["bce"], bce_sum_loss(logits, TARGETS).detach())
    torch.testing.assert_close(terms["rejection"], topk_rejection_loss(class_logits, TARGETS, 0.3).detach())
    torch.testing.assert_close(terms["contrastive"], prototype_contrastive_loss(h, TARGETS, PROTOTYPES, 0.07).detach())
    torch.testing.assert_close(total, terms["bce"] + 0.01 * terms["rejection"] + 1.0 * terms["contrastive"])
    assert terms["rejection"] > 0.1  # three kept negatives with sigmoid(>= 0) - 0.3 > 0.2 each
    total.backward()
    assert logits.grad is not None and h.grad is not None
    # The warm-up factors multiply the weights; the logged terms stay unweighted.
    ramped, ramped_terms = authors_loss(logits, class_logits, h, TARGETS, PROTOTYPES, 0.01, 1.0, 0.3, 0.07, (0.0, 0.5))
    torch.testing.assert_close(ramped, terms["bce"] + 0.5 * terms["contrastive"])
    torch.testing.assert_close(ramped_terms["rejection"], terms["rejection"])


def test_authors_zero_weights_need_no_prototypes_and_accept_pooled_features() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    total, terms = authors_loss(logits, None, torch.randn(2, 8), TARGETS, None, 0.0, 0.0)
    torch.testing.assert_close(total, bce_sum_loss(logits, TARGETS))
    assert terms["rejection"].item() == 0.0 and terms["contrastive"].item() == 0.0
    with pytest.raises(ValueError, match="need the ETF prototypes"):
        authors_loss(logits, None, torch.randn(2, 8), TARGETS, None, 0.01, 0.0)
    with pytest.raises(ValueError, match=r"needs the ETF classifier's \(B, C, C\) class logits"):
        authors_loss(logits, None, features(), TARGETS, PROTOTYPES, 0.01, 0.0)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        authors_loss(logits, None, features(), TARGETS, PROTOTYPES, -1.0, 0.0)


def test_warmup_ramps_like_the_authors() -> None:
    assert ramp(0.1, 0.2, 0.6) == 0.0 and ramp(0.4, 0.2, 0.6) == pytest.approx(0.5) and ramp(0.7, 0.2, 0.6) == 1.0
    # 11 rounds: p = (t - 1) / 10. Round 1 -> (0, 0); round 5 (p .4) -> (0, .5); round 9 (p .8) -> (2/3, 1).
    assert warmup_factors(1, 11) == (0.0, 0.0)
    assert warmup_factors(5, 11) == pytest.approx((0.0, 0.5))
    assert warmup_factors(9, 11) == pytest.approx((2 / 3, 1.0))
    assert warmup_factors(11, 11) == (1.0, 1.0)
    assert warmup_factors(1, 1) == (0.0, 0.0)  # one round: p = 0
