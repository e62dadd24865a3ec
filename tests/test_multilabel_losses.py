"""FedNCAlign-ML losses against hand-computed tiny cases (prototypes = the standard basis of R^3)."""

from __future__ import annotations

import math

import pytest
import torch

from fedapp.models.etf import simplex_etf
from fedapp.models.multilabel_losses import (
    contrastive_loss,
    fedncalign_loss,
    prototype_cosines,
    rejection_loss,
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


def test_rejection_loss_hand_computed() -> None:
    # tau = 0.5: hinges h01 -> (.1, .3, 0), h02 -> (0, 0, 0), h10 -> (0, .1, .3); 3 negatives x 3 prototypes.
    loss = rejection_loss(features(), TARGETS, PROTOTYPES, tau=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.8 / 9))
    # tau = 0.7: only .8 - .7 from h01 and from h10 survive.
    torch.testing.assert_close(rejection_loss(features(), TARGETS, PROTOTYPES, tau=0.7), torch.tensor(0.2 / 9))
    # Scaling prototypes or features does not change a cosine loss.
    torch.testing.assert_close(
        rejection_loss(3.0 * features(), TARGETS, 2.0 * PROTOTYPES, tau=0.5), torch.tensor(0.8 / 9)
    )


def test_rejection_similarities_below_tau_contribute_nothing() -> None:
    # Every cosine of every negative is <= 0.8, so tau = 0.8 leaves nothing, and no gradient.
    h = features()
    loss = rejection_loss(h, TARGETS, PROTOTYPES, tau=0.8)
    assert loss.item() == 0.0
    loss.backward()
    assert h.grad is not None and torch.count_nonzero(h.grad) == 0


def test_rejection_gradient_reaches_only_violating_negatives() -> None:
    h = features()
    rejection_loss(h, TARGETS, PROTOTYPES, tau=0.5).backward()
    assert h.grad is not None
    moved = h.grad.abs().sum(dim=-1) > 0  # (B, C): which class features get a gradient
    # Positives (0,0), (1,1), (1,2) and the sub-threshold negative (0,2) get none.
    assert moved.tolist() == [[False, True, False], [True, False, False]]


def test_rejection_ideal_etf_negative_is_not_penalised_at_the_default_tau() -> None:
    # Under the ETF classifier the ideal negative of class c is -w_c: cos to w_j (j != c) is 1/(C-1).
    etf = simplex_etf(4, 8, seed=0)
    h = -etf.T.unsqueeze(0)  # (1, C, d): every class feature is the ideal negative
    zeros = torch.zeros(1, 4)
    assert rejection_loss(h, zeros, etf).item() == 0.0  # default tau = 0.5 > 1/3
    # tau = 0: each of the 4 negatives has 3 prototypes at cosine 1/3 -> 4 * 3 * (1/3) / (4 * 4) = 0.25.
    torch.testing.assert_close(rejection_loss(h, zeros, etf, tau=0.0), torch.tensor(0.25))


def test_rejection_all_positive_batch_is_exactly_zero_with_a_gradient_path() -> None:
    h = features()
    loss = rejection_loss(h, torch.ones(2, 3), PROTOTYPES, tau=-1.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and torch.count_nonzero(h.grad) == 0


def test_contrastive_loss_hand_computed() -> None:
    # T = 0.5. Positives: h00 and h11 have s = (1, 0, 0) up to order: -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2);
    # h12 has s = (r, 0, r), r = 1/sqrt(2): -log(e^{2r} / (2 e^{2r} + 1)) = log(2 + e^{-2r}).
    one_hot_term = math.log(1 + 2 * math.exp(-2.0))  # 0.23954...
    diagonal_term = math.log(2 + math.exp(-math.sqrt(2)))  # 0.80787...
    expected = (2 * one_hot_term + diagonal_term) / 3
    assert expected == pytest.approx(0.42899, abs=1e-5)
    loss = contrastive_loss(features(), TARGETS, PROTOTYPES, temperature=0.5)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_contrastive_temperature_one_hand_computed() -> None:
    # A single prototype: the softmax over one entry is 1, the loss 0.
    h = torch.tensor([[[1.0, 0.0, 0.0]]])
    loss = contrastive_loss(h, torch.tensor([[1.0]]), torch.tensor([[1.0], [0.0], [0.0]]), temperature=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.0))
    # One positive h = e_1 against e_1, e_2, e_3 at T = 1: -log(e / (e + 2)) = log(1 + 2/e).
    h3 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    loss3 = contrastive_loss(h3, torch.tensor([[1.0, 0.0, 0.0]]), PROTOTYPES, temperature=1.0)
    torch.testing.assert_close(loss3, torch.tensor(math.log(1 + 2 / math.e)))


def test_contrastive_gradient_reaches_only_positives() -> None:
    h = features()
    contrastive_loss(h, TARGETS, PROTOTYPES, temperature=0.5).backward()
    assert h.grad is not None
    moved = h.grad.abs().sum(dim=-1) > 0
    assert moved.tolist() == [[True, False, False], [False, True, True]]


def test_contrastive_all_negative_batch_is_exactly_zero_without_nan() -> None:
    h = features()
    loss = contrastive_loss(h, torch.zeros(2, 3), PROTOTYPES)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and torch.count_nonzero(h.grad) == 0


def test_fedncalign_total_is_the_weighted_sum() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]], requires_grad=True)
    h = features()
    total, terms = fedncalign_loss(
        logits, h, TARGETS, PROTOTYPES, lambda_rejection=0.3, lambda_contrastive=2.0, tau=0.5, temperature=0.5
    )
    # BCE-with-logits per entry: y=1 -> log(1 + e^-z), y=0 -> log(1 + e^z); mean over the 6 entries.
    bce = (
        math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(2.0)) + math.log(1 + math.exp(-1.0))
        + math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(3.0)) + math.log(1 + math.exp(-0.5))
    ) / 6
    torch.testing.assert_close(terms["bce"], torch.tensor(bce))
    torch.testing.assert_close(terms["rejection"], torch.tensor(0.8 / 9))
    torch.testing.assert_close(terms["contrastive"], contrastive_loss(h, TARGETS, PROTOTYPES, 0.5).detach())
    torch.testing.assert_close(total, terms["bce"] + 0.3 * terms["rejection"] + 2.0 * terms["contrastive"])
    assert not any(term.requires_grad for term in terms.values())
    total.backward()
    assert logits.grad is not None and h.grad is not None


def test_fedncalign_zero_weights_need_no_prototypes_and_accept_pooled_features() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    pooled = torch.randn(2, 8)
    total, terms = fedncalign_loss(logits, pooled, TARGETS, None, lambda_rejection=0.0, lambda_contrastive=0.0)
    torch.testing.assert_close(total, torch.nn.functional.binary_cross_entropy_with_logits(logits, TARGETS))
    assert terms["rejection"].item() == 0.0 and terms["contrastive"].item() == 0.0
    with pytest.raises(ValueError, match="need the ETF prototypes"):
        fedncalign_loss(logits, pooled, TARGETS, None, lambda_rejection=1.0, lambda_contrastive=0.0)
    with pytest.raises(ValueError, match=r"class_features must be \(B, C, d\)"):
        fedncalign_loss(logits, pooled, TARGETS, torch.eye(8, 3), lambda_rejection=1.0, lambda_contrastive=0.0)


def test_losses_reject_bad_inputs() -> None:
    h = features()
    with pytest.raises(ValueError, match=r"targets must be \(2, 3\)"):
        rejection_loss(h, torch.zeros(2, 4), PROTOTYPES)
    with pytest.raises(ValueError, match=r"prototypes must be \(d, C\) = \(3, 3\)"):
        contrastive_loss(h, TARGETS, torch.eye(3, 4))
    with pytest.raises(ValueError, match="every entry 0 or 1"):
        rejection_loss(h, torch.full((2, 3), 0.5), PROTOTYPES)
    with pytest.raises(ValueError, match="tau is a cosine threshold"):
        rejection_loss(h, TARGETS, PROTOTYPES, tau=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        contrastive_loss(h, TARGETS, PROTOTYPES, temperature=0.0)
    with pytest.raises(ValueError, match="must both be"):
        fedncalign_loss(torch.zeros(2, 4), h, TARGETS, PROTOTYPES)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        fedncalign_loss(torch.zeros(2, 3), h, TARGETS, PROTOTYPES, lambda_rejection=-1.0)
