"""Unit tests for ``partitions``: the definitions, seeding and the error messages."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from partitions import (
    DIRICHLET_MODES,
    SCHEMES,
    allowed_class_count,
    class_presence,
    dirichlet_partition,
    dirichlet_sample_partition,
    iid_partition,
    local_test_indices,
    multilabel_partition,
    partition_dataset,
    proportional_allocation,
    proportional_test_sizes,
    sample_local_test,
    unassigned_indices,
)

# Both single-label Dirichlet schemes obey the same contract (cover, min size, seeding, errors).
DIRICHLETS = pytest.mark.parametrize(
    "dirichlet_fn", [dirichlet_sample_partition, dirichlet_partition], ids=["per-sample", "cut"]
)

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def int_labels() -> np.ndarray:
    """2,000 single-label samples over 10 classes."""
    return np.random.default_rng(123).integers(0, NUM_CLASSES, size=2000)


@pytest.fixture(scope="module")
def composite_labels() -> np.ndarray:
    """ML-CIFAR-style multi-hot labels: 100 singles per class plus 20 composites per class pair."""
    eye = np.eye(NUM_CLASSES, dtype=np.float32)
    singles = np.repeat(eye, 100, axis=0)
    pairs = [eye[a] + eye[b] for a in range(NUM_CLASSES) for b in range(a + 1, NUM_CLASSES)]
    return np.concatenate([singles, np.repeat(np.stack(pairs), 20, axis=0)])


@pytest.fixture(scope="module")
def chestx_like_labels() -> np.ndarray:
    """Sparse multi-hot labels over 14 classes with many all-zero ("No Finding") rows."""
    return (np.random.default_rng(7).random((3000, 14)) < 0.05).astype(np.int64)


def assert_disjoint_sorted(parts: list[np.ndarray], num_samples: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each partition is sorted with no repeats"
        assert part.size == 0 or (part.min() >= 0 and part.max() < num_samples)
    merged = np.concatenate(parts)
    assert len(np.unique(merged)) == len(merged), "a sample is on two clients"


def mean_kl_to_global(counts: np.ndarray) -> float:
    """Mean over clients of KL(client label distribution || global label distribution)."""
    eps = 1e-12
    glob = counts.sum(axis=0) / counts.sum()
    local = counts / counts.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(local * np.log((local + eps) / (glob + eps)), axis=1)))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------- iid


def test_iid_covers_everything_with_even_sizes() -> None:
    parts = iid_partition(103, 10, seed=0)
    assert_disjoint_sorted(parts, 103)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_seeded() -> None:
    assert same(iid_partition(500, 5, seed=3), iid_partition(500, 5, seed=3))
    assert not same(iid_partition(500, 5, seed=3), iid_partition(500, 5, seed=4))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_samples": 10, "num_clients": 0, "seed": 0}, "num-partitions"),
        ({"num_samples": 10, "num_clients": 11, "seed": 0}, "num-partitions"),
        ({"num_samples": 10, "num_clients": 5, "seed": 0, "min_size": 3}, "min-partition-size"),
        ({"num_samples": 10, "num_clients": 5, "seed": 0, "min_size": -1}, "min-partition-size"),
        ({"num_samples": 10, "num_clients": 5, "seed": -1}, "seed"),
    ],
)
def test_iid_rejects_impossible_requests(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        iid_partition(**kwargs)


# --------------------------------------------------------------------------------- dirichlet


@DIRICHLETS
def test_dirichlet_covers_everything_disjointly(int_labels: np.ndarray, dirichlet_fn) -> None:
    parts = dirichlet_fn(int_labels, 10, alpha=0.5, seed=0)
    assert_disjoint_sorted(parts, len(int_labels))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(int_labels)))
    counts = class_presence(int_labels, parts, NUM_CLASSES)
    assert np.array_equal(counts.sum(axis=0), np.bincount(int_labels, minlength=NUM_CLASSES))


@DIRICHLETS
def test_dirichlet_honours_min_size(int_labels: np.ndarray, dirichlet_fn) -> None:
    parts = dirichlet_fn(int_labels, 10, alpha=0.1, seed=1, min_size=60)
    assert min(len(p) for p in parts) >= 60


@DIRICHLETS
def test_dirichlet_is_seeded(int_labels: np.ndarray, dirichlet_fn) -> None:
    first = dirichlet_fn(int_labels, 8, alpha=0.5, seed=11)
    assert same(first, dirichlet_fn(int_labels, 8, alpha=0.5, seed=11))
    assert not same(first, dirichlet_fn(int_labels, 8, alpha=0.5, seed=12))


@DIRICHLETS
def test_dirichlet_small_alpha_skews_more(int_labels: np.ndarray, dirichlet_fn) -> None:
    def skew(alpha: float) -> float:
        kls = [
            mean_kl_to_global(class_presence(int_labels, dirichlet_fn(int_labels, 10, alpha, s), 10))
            for s in range(5)
        ]
        return float(np.mean(kls))

    small, large = skew(0.1), skew(100.0)
    assert small > 10 * large
    assert large < 0.05, "large alpha approaches IID"


@DIRICHLETS
def test_dirichlet_single_client_gets_everything(int_labels: np.ndarray, dirichlet_fn) -> None:
    (only,) = dirichlet_fn(int_labels, 1, alpha=0.3, seed=0)
    assert np.array_equal(only, np.arange(len(int_labels)))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"num_clients": 0}, "num-partitions"),
        ({"num_clients": 3000}, "num-partitions"),
        ({"min_size": 201}, "min-partition-size"),
    ],
)
@DIRICHLETS
def test_dirichlet_rejects_impossible_requests(int_labels: np.ndarray, kwargs: dict, key: str, dirichlet_fn) -> None:
    args = {"labels": int_labels, "num_clients": 10, "alpha": 0.5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=key):
        dirichlet_fn(**args)


@DIRICHLETS
def test_dirichlet_reports_unreachable_min_size(dirichlet_fn) -> None:
    labels = np.repeat([0, 1], 10)  # 2 classes, 20 samples, tiny alpha: clients come out empty
    with pytest.raises(ValueError, match="min-partition-size=2.*alpha"):
        dirichlet_fn(labels, 10, alpha=0.01, seed=0, min_size=2)


@DIRICHLETS
def test_dirichlet_rejects_float_labels(dirichlet_fn) -> None:
    with pytest.raises(ValueError, match="integer"):
        dirichlet_fn(np.array([0.0, 1.0, 1.0]), 2, alpha=1.0, seed=0)


def test_dirichlet_per_sample_draws_every_sample_independently() -> None:
    """Per-sample definition: given q_c, client k's count of class c is Binomial(n_c, q_{c,k}).

    With alpha huge, q_c = 1/K for every class, so the counts must spread as Binomial(1000, 1/4)
    (variance 187.5) around 250; cutting at the shares instead gives 250 +- 1 (variance < 1).
    """
    labels = np.repeat(np.arange(5), 1000)
    per_sample, cut = [], []
    for seed in range(40):
        per_sample.append(class_presence(labels, dirichlet_sample_partition(labels, 4, 1e6, seed), 5))
        cut.append(class_presence(labels, dirichlet_partition(labels, 4, 1e6, seed), 5))
    per_sample, cut = np.stack(per_sample), np.stack(cut)
    assert abs(per_sample.mean() - 250) < 2
    assert 150 < per_sample.var() < 230  # Binomial(1000, 0.25): 187.5 (800 cells)
    assert cut.var() < 1


def test_dirichlet_per_sample_client_share_per_class_has_the_dirichlet_mean_and_variance() -> None:
    """Share of class c on client k, S = count / n_c: E[S] = 1/K and, as S | q ~ Binomial(n_c, q)/n_c
    with q ~ Beta(alpha, (K-1) alpha), Var[S] = Var[q] + E[q(1-q)] / n_c."""
    num_clients, alpha, n_c = 5, 0.5, 200
    labels = np.repeat(np.arange(4), n_c)
    shares = np.stack([
        class_presence(labels, dirichlet_sample_partition(labels, num_clients, alpha, seed), 4) / n_c
        for seed in range(300)
    ])
    mean_q = 1 / num_clients
    var_q = mean_q * (1 - mean_q) / (num_clients * alpha + 1)
    expected_var = var_q + (mean_q - (var_q + mean_q**2)) / n_c
    assert np.allclose(shares.mean(axis=0), mean_q, atol=0.04)
    assert shares.var() == pytest.approx(expected_var, rel=0.1)


# -------------------------------------------------------------------------------- multilabel


def test_allowed_class_count_rounds_half_up() -> None:
    assert allowed_class_count(10, 0.5) == 5
    assert allowed_class_count(7, 0.5) == 4
    assert allowed_class_count(10, 0.01) == 1
    assert allowed_class_count(14, 1.0) == 14


def test_multilabel_allowed_sets_have_rho_c_classes_and_cover_all(composite_labels: np.ndarray) -> None:
    for seed in range(5):
        result = multilabel_partition(composite_labels, 10, alpha=0.5, class_presence_ratio=0.5, seed=seed)
        assert result.allowed_classes.shape == (10, NUM_CLASSES)
        assert np.all(result.allowed_classes.sum(axis=1) == 5)
        assert np.all(result.allowed_classes.any(axis=0)), "every class is allowed on some client"


def test_multilabel_repair_reaches_exact_cover(composite_labels: np.ndarray) -> None:
    # m * K == C: coverage forces every class onto exactly one client.
    result = multilabel_partition(composite_labels, 5, alpha=1.0, class_presence_ratio=0.2, seed=4)
    assert np.all(result.allowed_classes.sum(axis=0) == 1)
    # Then each single-label sample has exactly one eligible client, and it must be there.
    owner_of_class = result.allowed_classes.argmax(axis=0)
    for k, part in enumerate(result.partitions):
        singles = part[composite_labels[part].sum(axis=1) == 1]
        assert np.all(owner_of_class[composite_labels[singles].argmax(axis=1)] == k)
    num_singles = 100 * NUM_CLASSES
    assert sum(int((composite_labels[p].sum(axis=1) == 1).sum()) for p in result.partitions) == num_singles


def test_multilabel_clients_hold_only_allowed_classes(composite_labels: np.ndarray) -> None:
    result = multilabel_partition(composite_labels, 10, alpha=0.5, class_presence_ratio=0.5, seed=2)
    assert_disjoint_sorted(result.partitions, len(composite_labels))
    present = class_presence(composite_labels, result.partitions, NUM_CLASSES) > 0
    for k, part in enumerate(result.partitions):
        outside = composite_labels[part][:, ~result.allowed_classes[k]]
        assert not outside.any(), f"client {k} holds a class outside its allowed set"
    assert np.all(present.sum(axis=1) <= round(0.5 * NUM_CLASSES))


def test_multilabel_drops_exactly_the_samples_no_client_allows(composite_labels: np.ndarray) -> None:
    result = multilabel_partition(composite_labels, 10, alpha=0.5, class_presence_ratio=0.3, seed=0)
    # Eligible on k iff the label set is a subset of A_k.
    outside = composite_labels.astype(int) @ (~result.allowed_classes).T.astype(int)
    expected = np.flatnonzero(~(outside == 0).any(axis=1))
    assert result.num_unassigned > 0, "rho=0.3 must make some pair unsupported (test premise)"
    assert np.array_equal(result.unassigned, expected)
    assert np.array_equal(result.unassigned, unassigned_indices(result.partitions, len(composite_labels)))


def test_multilabel_rho_one_assigns_every_sample(composite_labels: np.ndarray) -> None:
    result = multilabel_partition(composite_labels, 10, alpha=0.5, class_presence_ratio=1.0, seed=0)
    assert result.num_unassigned == 0
    assert np.array_equal(np.sort(np.concatenate(result.partitions)), np.arange(len(composite_labels)))


def test_multilabel_rho_one_large_alpha_approaches_iid(composite_labels: np.ndarray) -> None:
    result = multilabel_partition(composite_labels, 5, alpha=1e4, class_presence_ratio=1.0, seed=0)
    counts = class_presence(composite_labels, result.partitions, NUM_CLASSES)
    assert mean_kl_to_global(counts) < 0.02
    sizes = np.array([len(p) for p in result.partitions])
    assert np.all(np.abs(sizes - len(composite_labels) / 5) < 0.15 * len(composite_labels) / 5)


def test_multilabel_small_alpha_skews_more(composite_labels: np.ndarray) -> None:
    def skew(alpha: float) -> float:
        kls = []
        for seed in range(4):
            result = multilabel_partition(composite_labels, 10, alpha, class_presence_ratio=1.0, seed=seed)
            kls.append(mean_kl_to_global(class_presence(composite_labels, result.partitions, NUM_CLASSES)))
        return float(np.mean(kls))

    assert skew(0.1) > 5 * skew(100.0)


def test_multilabel_spread_negatives_evenly(chestx_like_labels: np.ndarray) -> None:
    negatives = chestx_like_labels.sum(axis=1) == 0
    assert negatives.sum() > 1000
    for spread in (True, False):
        result = multilabel_partition(
            chestx_like_labels, 7, alpha=0.5, class_presence_ratio=0.5, seed=3, spread_negatives=spread
        )
        per_client = np.array([int(negatives[p].sum()) for p in result.partitions])
        assert per_client.sum() == negatives.sum(), "every negative is assigned"
        if spread:
            assert per_client.max() - per_client.min() <= 1


def test_multilabel_honours_min_size(composite_labels: np.ndarray) -> None:
    result = multilabel_partition(
        composite_labels, 10, alpha=0.1, class_presence_ratio=0.5, seed=0, min_size=40
    )
    assert min(len(p) for p in result.partitions) >= 40


def test_multilabel_is_seeded(composite_labels: np.ndarray) -> None:
    def run(seed: int) -> list[np.ndarray]:
        return multilabel_partition(composite_labels, 6, 0.5, 0.5, seed=seed).partitions

    assert same(run(5), run(5))
    assert not same(run(5), run(6))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"class_presence_ratio": 0.0}, "class-presence-ratio"),
        ({"class_presence_ratio": 1.5}, "class-presence-ratio"),
        ({"class_presence_ratio": 0.1, "num_clients": 5}, "class-presence-ratio"),  # 5 x 1 < 10
        ({"alpha": 0.0}, "alpha"),
        ({"num_clients": 0}, "num-partitions"),
        ({"min_size": 1000}, "min-partition-size"),
    ],
)
def test_multilabel_rejects_impossible_requests(composite_labels: np.ndarray, kwargs: dict, key: str) -> None:
    args = {
        "label_matrix": composite_labels,
        "num_clients": 10,
        "alpha": 0.5,
        "class_presence_ratio": 0.5,
        "seed": 0,
    } | kwargs
    with pytest.raises(ValueError, match=key):
        multilabel_partition(**args)


def test_multilabel_rejects_non_multi_hot() -> None:
    with pytest.raises(ValueError, match="multi-hot"):
        multilabel_partition(np.array([[0, 2], [1, 0]]), 2, 1.0, 1.0, seed=0)


# ---------------------------------------------------------------------------------- counting


def test_class_presence_counts_int_and_multi_hot() -> None:
    parts = [np.array([0, 2]), np.array([1, 3])]
    ints = np.array([1, 0, 1, 2])
    assert np.array_equal(class_presence(ints, parts, 3), [[0, 2, 0], [1, 0, 1]])
    hot = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]])
    assert np.array_equal(class_presence(hot, parts, 3), [[2, 1, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="num_classes"):
        class_presence(ints, parts, 2)


def test_unassigned_indices_lists_the_gaps() -> None:
    assert np.array_equal(unassigned_indices([np.array([0, 3]), np.array([1])], 5), [2, 4])


# -------------------------------------------------------------------------------- local test


def test_proportional_allocation_is_exact_and_within_one() -> None:
    counts = np.array([7, 0, 2, 1, 13])
    targets = proportional_allocation(counts, 50)
    assert targets.sum() == 50
    assert targets[1] == 0
    assert np.all(np.abs(targets - 50 * counts / counts.sum()) < 1)


def test_local_test_indices_match_client_distribution() -> None:
    test_labels = np.repeat(np.arange(NUM_CLASSES), 100)  # balanced global test set
    train_counts = np.array([300, 150, 75, 40, 20, 10, 5, 0, 0, 0])
    idx = local_test_indices(test_labels, train_counts, size=400, seed=0)
    assert idx.dtype == np.int64 and len(idx) == 400
    got = np.bincount(test_labels[idx], minlength=NUM_CLASSES)
    assert np.all(np.abs(got - 400 * train_counts / train_counts.sum()) < 1)
    assert np.all(got[7:] == 0), "classes the client never trained on are absent"
    # Class 0 wants 201 > 100 test samples: only it is drawn with replacement.
    class0 = idx[test_labels[idx] == 0]
    assert len(np.unique(class0)) <= 100 < len(class0)
    others = idx[test_labels[idx] != 0]
    assert len(np.unique(others)) == len(others)
    assert np.array_equal(idx, local_test_indices(test_labels, train_counts, 400, seed=0))
    assert not np.array_equal(idx, local_test_indices(test_labels, train_counts, 400, seed=1))


def test_proportional_test_sizes_hand_case() -> None:
    """t_kc = floor(n_kc / n * n_test): counts ((6, 2), (0, 2)), n = 10, n_test = 5 -> ((3, 1), (0, 1))."""
    sizes = proportional_test_sizes(np.array([[6, 2], [0, 2]]), 5)
    np.testing.assert_array_equal(sizes, [[3, 1], [0, 1]])
    assert sizes.dtype == np.int64


def test_proportional_test_sizes_follow_the_training_shares() -> None:
    counts = np.random.default_rng(0).integers(0, 300, size=(20, 10))
    sizes = proportional_test_sizes(counts, 10_000)
    exact = counts * 10_000 / counts.sum()
    assert np.all((exact - 1 < sizes) & (sizes <= exact))  # the floor of n_kc / n * n_test
    assert 10_000 - 200 < sizes.sum() <= 10_000  # together about the size of the global test set


def test_proportional_test_sizes_give_a_tiny_client_one_sample() -> None:
    # Client 1 holds 3 of 1,003 samples: every t_1c floors to 0 with n_test = 100.
    sizes = proportional_test_sizes(np.array([[500, 500, 0], [1, 0, 2]]), 100)
    np.testing.assert_array_equal(sizes[0], [49, 49, 0])
    np.testing.assert_array_equal(sizes[1], [0, 0, 1])  # its most frequent class


def test_proportional_test_sizes_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="client_class_counts"):
        proportional_test_sizes(np.array([1, 2]), 10)
    with pytest.raises(ValueError, match="num_test"):
        proportional_test_sizes(np.ones((2, 2), dtype=int), 0)


def test_sample_local_test_draws_the_targets_per_class() -> None:
    test_labels = np.repeat(np.arange(3), 4)
    idx = sample_local_test(test_labels, np.array([2, 0, 6]), seed=0)
    np.testing.assert_array_equal(np.bincount(test_labels[idx], minlength=3), [2, 0, 6])
    assert len(np.unique(idx[test_labels[idx] == 0])) == 2  # enough pool: no duplicates
    assert np.array_equal(idx, sample_local_test(test_labels, np.array([2, 0, 6]), seed=0))


def test_local_test_indices_rejects_bad_inputs() -> None:
    test_labels = np.repeat(np.arange(3), 5)
    with pytest.raises(ValueError, match="positive sum"):
        local_test_indices(test_labels, np.zeros(3), 10, seed=0)
    with pytest.raises(ValueError, match="size"):
        local_test_indices(test_labels, np.ones(3), 0, seed=0)
    with pytest.raises(ValueError, match="class 2"):
        local_test_indices(np.array([0, 1]), np.array([1, 1, 1]), 6, seed=0)


# -------------------------------------------------------------------------------- dispatcher


def test_partition_dataset_dispatches(int_labels: np.ndarray, composite_labels: np.ndarray) -> None:
    assert same(
        partition_dataset(int_labels, 5, "iid", 0.5, 1.0, seed=1, min_size=1),
        iid_partition(len(int_labels), 5, seed=1),
    )
    assert DIRICHLET_MODES == ("per-sample", "cut")
    assert same(  # single-label default: FedLoGe's per-sample draw
        partition_dataset(int_labels, 5, "dirichlet", 0.5, 1.0, seed=1, min_size=1),
        dirichlet_sample_partition(int_labels, 5, 0.5, seed=1),
    )
    assert same(
        partition_dataset(int_labels, 5, "dirichlet", 0.5, 1.0, seed=1, min_size=1, dirichlet_mode="cut"),
        dirichlet_partition(int_labels, 5, 0.5, seed=1),
    )
    with pytest.raises(ValueError, match="dirichlet-mode='quantile'"):
        partition_dataset(int_labels, 5, "dirichlet", 0.5, 1.0, seed=1, min_size=1, dirichlet_mode="quantile")
    assert same(
        partition_dataset(composite_labels, 5, "dirichlet", 0.5, 0.6, seed=1, min_size=1),
        multilabel_partition(composite_labels, 5, 0.5, 0.6, seed=1).partitions,
    )


def test_partition_dataset_logs_dropped_samples(
    composite_labels: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="partitions.dispatch"):
        partition_dataset(composite_labels, 10, "dirichlet", 0.5, 0.3, seed=0, min_size=1)
    assert "dropped" in caplog.text


def test_partition_dataset_rejects_bad_scheme_and_single_label_rho(int_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="partition='pathological'.*'dirichlet', 'iid'"):
        partition_dataset(int_labels, 5, "pathological", 0.5, 1.0, seed=0, min_size=1)
    assert SCHEMES == ("dirichlet", "iid")
    with pytest.raises(ValueError, match="class-presence-ratio"):
        partition_dataset(int_labels, 5, "dirichlet", 0.5, 0.5, seed=0, min_size=1)
