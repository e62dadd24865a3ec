"""GA-FR, LA-FR (FedLoGe Eq. 6-7) and class-wise head aggregation, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedapp.models.feature_realignment import (
    aggregate_head,
    classwise_head_weights,
    ga_fr,
    la_fr,
)

# Two classes in 2-D, nn.Linear layout (rows = classes): norms 5 and 2.
PSI = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
# Local head of one client: norms 1 and 5.
PHI = torch.tensor([[1.0, 0.0], [0.0, -5.0]])


def test_ga_fr_hand_vectors() -> None:
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    torch.testing.assert_close(ga_fr(PSI), expected)
    assert torch.equal(PSI, torch.tensor([[3.0, 4.0], [0.0, 2.0]])), "input must not be modified"


def test_la_fr_hand_vectors() -> None:
    # Directions from psi, norms (1, 5) from phi.
    expected = torch.tensor([[0.6, 0.8], [0.0, 5.0]])
    torch.testing.assert_close(la_fr(PSI, PHI), expected)
    # Algorithm 1 applies Eq. 7 to the GA-FR output: same result.
    torch.testing.assert_close(la_fr(ga_fr(PSI), PHI), expected)


def test_la_fr_zero_local_row_gives_zero_row() -> None:
    phi = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    torch.testing.assert_close(la_fr(PSI, phi), torch.tensor([[0.0, 0.0], [0.0, 2.0]]))


def test_realignment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"zero-norm class rows \[1\]"):
        ga_fr(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="same"):
        la_fr(PSI, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2-D"):
        ga_fr(torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        ga_fr(torch.tensor([[float("nan"), 1.0]]))


def test_classwise_weights_hand_case() -> None:
    # Client 0: 8 of class 0, 2 of class 1; client 1: 2 and 2; nobody has class 2.
    counts = np.array([[8, 2, 0], [2, 2, 0]])
    weights = classwise_head_weights(counts, np.array([10, 4]))
    expected = np.array(
        [
            [0.8, 0.5, 10 / 14],  # class 0: n_kc / n_c = 8/10; class 1: 2/4; class 2: FedAvg
            [0.2, 0.5, 4 / 14],
        ]
    )
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-12)


def test_classwise_weights_use_proportions_times_client_share() -> None:
    # num_samples differs from the row sums, so the formula's two factors are both visible:
    # p_0 = (.5, .5), p_1 = (.25, .75), n = (1, 1):
    # class 0: (.5 * .5/.75, .5 * .25/.75) -> (2/3, 1/3)
    # class 1: (.5 * .5/1.25, .5 * .75/1.25) -> (.4, .6)
    weights = classwise_head_weights(np.array([[1, 1], [1, 3]]), np.array([1, 1]))
    np.testing.assert_allclose(weights, [[2 / 3, 0.4], [1 / 3, 0.6]], rtol=0, atol=1e-12)


def test_classwise_weights_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="num_samples must have shape"):
        classwise_head_weights(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        classwise_head_weights(np.array([[1, -1]]), np.array([1]))
    with pytest.raises(ValueError, match="all zero"):
        classwise_head_weights(np.ones((2, 2)), np.zeros(2))


def test_aggregate_head_hand_case() -> None:
    w0 = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    w1 = np.array([[3.0, 2.0], [4.0, 0.0]], dtype=np.float32)
    b0 = np.array([1.0, 2.0], dtype=np.float32)
    b1 = np.array([5.0, 6.0], dtype=np.float32)
    cw = np.array([[0.75, 0.0], [0.25, 1.0]])
    head, bias = aggregate_head([w0, w1], [b0, b1], cw)
    np.testing.assert_allclose(head, [[1.5, 0.5], [4.0, 0.0]])
    np.testing.assert_allclose(bias, [2.0, 6.0])
    assert head.dtype == np.float32 and bias is not None and bias.dtype == np.float32
    head_only, no_bias = aggregate_head([w0, w1], None, cw)
    np.testing.assert_allclose(head_only, head)
    assert no_bias is None


def test_aggregate_head_with_fedavg_weights_is_fedavg() -> None:
    rng = np.random.default_rng(0)
    heads = [rng.normal(size=(3, 4)) for _ in range(2)]
    cw = np.tile(np.array([[0.3], [0.7]]), (1, 3))
    head, _ = aggregate_head(heads, None, cw)
    np.testing.assert_allclose(head, 0.3 * heads[0] + 0.7 * heads[1])


def test_aggregate_head_rejects_bad_input() -> None:
    w = np.zeros((2, 3))
    with pytest.raises(ValueError, match="sum to 1"):
        aggregate_head([w, w], None, np.array([[0.5, 0.5], [0.4, 0.5]]))
    with pytest.raises(ValueError, match=r"shape \(K, C\)"):
        aggregate_head([w, w], None, np.ones((3, 2)) / 3)
    with pytest.raises(ValueError, match="one shape"):
        aggregate_head([w, np.zeros((2, 4))], None, np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="biases"):
        aggregate_head([w, w], [np.zeros(2)], np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="at least one"):
        aggregate_head([], None, np.ones((0, 2)))
