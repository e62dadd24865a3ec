"""The simplex ETF against its closed form: W^T W = C/(C-1) I - 1/(C-1) 1 1^T."""

from __future__ import annotations

import pytest
import torch

from fedapp.models.etf import random_orthonormal, simplex_etf


def closed_form_gram(num_classes: int) -> torch.Tensor:
    c = num_classes
    return c / (c - 1) * torch.eye(c) - 1.0 / (c - 1) * torch.ones(c, c)


@pytest.mark.parametrize(
    ("num_classes", "dim"),
    [(2, 1), (3, 2), (10, 9), (7, 6), (20, 19), (2, 8), (10, 10), (10, 64), (7, 512), (20, 512)],
)
def test_gram_matrix_equals_closed_form(num_classes: int, dim: int) -> None:
    etf = simplex_etf(num_classes, dim, seed=3)
    assert etf.shape == (dim, num_classes)
    assert etf.dtype == torch.float32
    torch.testing.assert_close(etf.T @ etf, closed_form_gram(num_classes), atol=1e-5, rtol=0)


def test_unit_columns_and_equal_pairwise_cosine() -> None:
    etf = simplex_etf(10, 64, seed=0)
    torch.testing.assert_close(etf.norm(dim=0), torch.ones(10), atol=1e-6, rtol=0)
    cosine = etf.T @ etf
    off_diagonal = cosine[~torch.eye(10, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, -1.0 / 9), atol=1e-6, rtol=0)


def test_columns_sum_to_zero() -> None:
    # A consequence of the centering: the C prototypes are balanced around the origin.
    for dim in (9, 64):
        torch.testing.assert_close(simplex_etf(10, dim, seed=1).sum(dim=1), torch.zeros(dim), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("num_classes", "dim"), [(10, 9), (10, 64)])
def test_same_seed_same_matrix_different_seed_different(num_classes: int, dim: int) -> None:
    first = simplex_etf(num_classes, dim, seed=5)
    assert torch.equal(first, simplex_etf(num_classes, dim, seed=5))
    other = simplex_etf(num_classes, dim, seed=6)
    assert not torch.allclose(first, other, atol=1e-3)


def test_random_orthonormal_is_orthonormal_and_seeded() -> None:
    basis = random_orthonormal(16, 5, seed=2)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    assert torch.equal(basis, random_orthonormal(16, 5, seed=2))
    with pytest.raises(ValueError, match="orthonormal columns"):
        random_orthonormal(3, 4, seed=0)


def test_dimension_below_c_minus_one_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"needs dim >= 9, got dim=8"):
        simplex_etf(10, 8)


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_fewer_than_two_classes_is_rejected(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes >= 2"):
        simplex_etf(num_classes, 16)
