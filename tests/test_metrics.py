"""Unit tests of fedapp.metrics: agreement with scikit-learn, hand-computed cases, input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from fedapp.metrics import (
    accuracy,
    multilabel_metrics,
    per_class_auc,
    personalized_mean,
    cumulative_shot_groups,
    shot_groups,
    singlelabel_metrics,
)

# Hand case: 3 samples, 2 classes.
Y_TRUE = np.array([[1, 0], [0, 1], [1, 1]])
Y_SCORE = np.array([[0.9, 0.2], [0.4, 0.7], [0.3, 0.6]])


# ---------------------------------------------------------------------------------------------
# Multi-label
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = (rng.random((200, 6)) < 0.3).astype(int)
    y_score = np.clip(0.6 * y_true + 0.5 * rng.random((200, 6)), 0.0, 1.0)
    result = multilabel_metrics(y_true, y_score)
    pred = (y_score >= 0.5).astype(int)
    assert result["macro_auc"] == pytest.approx(roc_auc_score(y_true, y_score, average="macro"))
    assert result["micro_auc"] == pytest.approx(roc_auc_score(y_true, y_score, average="micro"))
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, pred, average="macro", zero_division=0))
    assert result["micro_f1"] == pytest.approx(f1_score(y_true, pred, average="micro", zero_division=0))
    np.testing.assert_allclose(per_class_auc(y_true, y_score), roc_auc_score(y_true, y_score, average=None))


def test_multilabel_returns_python_floats_in_unit_interval() -> None:
    result = multilabel_metrics(Y_TRUE, Y_SCORE)
    assert set(result) == {"macro_auc", "micro_auc", "macro_f1", "micro_f1"}
    for value in result.values():
        assert type(value) is float
        assert 0.0 <= value <= 1.0


def test_multilabel_hand_case() -> None:
    # Class 0: positives 0.9, 0.3 vs negative 0.4 -> 1 of 2 pairs ordered -> AUC 0.5.
    # Class 1: positives 0.7, 0.6 vs negative 0.2 -> AUC 1.0.  Macro = 0.75.
    # Micro: positives {0.9, 0.7, 0.3, 0.6} vs negatives {0.2, 0.4}: 7 of 8 pairs -> 0.875.
    # Predictions at 0.5: [[1,0],[0,1],[0,1]]. Class 0: TP 1, FN 1 -> F1 2/3; class 1: TP 2 -> F1 1.
    # Micro F1: TP 3, FP 0, FN 1 -> 6/7.
    np.testing.assert_allclose(per_class_auc(Y_TRUE, Y_SCORE), [0.5, 1.0])
    result = multilabel_metrics(Y_TRUE, Y_SCORE)
    assert result["macro_auc"] == pytest.approx(0.75)
    assert result["micro_auc"] == pytest.approx(0.875)
    assert result["macro_f1"] == pytest.approx(5 / 6)
    assert result["micro_f1"] == pytest.approx(6 / 7)


def test_class_without_positives_is_left_out_of_macro_auc_but_not_macro_f1() -> None:
    # Add class 2 with no positive sample; one of its scores (0.6) is a false positive.
    y_true = np.column_stack([Y_TRUE, [0, 0, 0]])
    y_score = np.column_stack([Y_SCORE, [0.1, 0.6, 0.2]])
    aucs = per_class_auc(y_true, y_score)
    np.testing.assert_allclose(aucs[:2], [0.5, 1.0])
    assert math.isnan(aucs[2])
    result = multilabel_metrics(y_true, y_score)
    assert result["macro_auc"] == pytest.approx(0.75)
    # Micro AUC: positives {0.9,0.7,0.3,0.6} vs negatives {0.2,0.4,0.1,0.6,0.2}:
    # 5 + 5 + 3 + (4 + 0.5 tie) = 17.5 of 20 pairs.
    assert result["micro_auc"] == pytest.approx(17.5 / 20)
    # Class 2 has F1 0 (TP 0, FP 1): macro F1 = (2/3 + 1 + 0) / 3; micro: TP 3, FP 1, FN 1 -> 6/8.
    assert result["macro_f1"] == pytest.approx(5 / 9)
    assert result["micro_f1"] == pytest.approx(0.75)


def test_class_without_negatives_is_left_out_of_macro_auc() -> None:
    y_true = np.column_stack([Y_TRUE, [1, 1, 1]])
    y_score = np.column_stack([Y_SCORE, [0.9, 0.1, 0.5]])
    assert math.isnan(per_class_auc(y_true, y_score)[2])
    assert multilabel_metrics(y_true, y_score)["macro_auc"] == pytest.approx(0.75)


def test_class_without_positives_or_predictions_has_f1_zero_like_sklearn() -> None:
    y_true = np.column_stack([Y_TRUE, [0, 0, 0]])
    y_score = np.column_stack([Y_SCORE, [0.1, 0.2, 0.3]])
    result = multilabel_metrics(y_true, y_score)
    pred = (y_score >= 0.5).astype(int)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, pred, average="macro", zero_division=0))


def test_auc_undefined_everywhere_gives_nan() -> None:
    y_true = np.zeros((3, 2), dtype=int)
    result = multilabel_metrics(y_true, Y_SCORE)
    assert math.isnan(result["macro_auc"])
    assert math.isnan(result["micro_auc"])
    assert result["macro_f1"] == 0.0
    assert result["micro_f1"] == 0.0


def test_threshold_is_inclusive_and_configurable() -> None:
    y_true = np.array([[1], [0]])
    assert multilabel_metrics(y_true, np.array([[0.5], [0.4]]))["micro_f1"] == 1.0
    assert multilabel_metrics(y_true, np.array([[0.5], [0.4]]), threshold=0.6)["micro_f1"] == 0.0
    low = multilabel_metrics(y_true, np.array([[0.5], [0.4]]), threshold=0.3)
    assert low["micro_f1"] == pytest.approx(2 / 3)


def test_single_class_uses_the_multilabel_definitions() -> None:
    # sklearn reads an (N, 1) label matrix as binary and would micro-average F1 over {0, 1} (-> 0.5).
    y_true = np.array([[1], [0]])
    y_score = np.array([[0.4], [0.3]])
    result = multilabel_metrics(y_true, y_score)
    assert result["macro_f1"] == 0.0 and result["micro_f1"] == 0.0  # TP 0, FP 0, FN 1
    assert result["macro_auc"] == 1.0 and result["micro_auc"] == 1.0


def test_multilabel_accepts_bool_and_float_labels() -> None:
    expected = multilabel_metrics(Y_TRUE, Y_SCORE)
    assert multilabel_metrics(Y_TRUE.astype(bool), Y_SCORE) == expected
    as_float32 = multilabel_metrics(Y_TRUE.astype(np.float32), Y_SCORE.astype(np.float32))
    assert as_float32 == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y_true", "y_score", "argument"),
    [
        (np.array([1, 0, 1]), np.array([0.1, 0.2, 0.3]), "y_true"),  # 1-D labels
        (np.zeros((0, 2)), np.zeros((0, 2)), "y_true"),  # no sample
        (Y_TRUE, Y_SCORE[:2], "y_score"),  # mismatched number of samples
        (Y_TRUE, Y_SCORE[:, :1], "y_score"),  # mismatched number of classes
        (Y_TRUE, Y_SCORE.ravel(), "y_score"),  # 1-D scores
        (np.array([[1, 2], [0, 1], [1, 1]]), Y_SCORE, "y_true"),  # label not 0/1
        (np.array([[1, -1], [0, 1], [1, 1]]), Y_SCORE, "y_true"),  # label not 0/1
        (np.array([[0.5, 0], [0, 1], [1, 1]]), Y_SCORE, "y_true"),  # label not 0/1
        (Y_TRUE, np.array([[1.2, 0.2], [0.4, 0.7], [0.3, 0.6]]), "y_score"),  # above 1 (logit)
        (Y_TRUE, np.array([[-0.1, 0.2], [0.4, 0.7], [0.3, 0.6]]), "y_score"),  # below 0
        (Y_TRUE, np.array([[np.nan, 0.2], [0.4, 0.7], [0.3, 0.6]]), "y_score"),  # NaN
        (Y_TRUE, np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "y_score"),  # not numbers
    ],
)
def test_multilabel_validation_names_the_argument(
    y_true: np.ndarray, y_score: np.ndarray, argument: str
) -> None:
    for function in (multilabel_metrics, per_class_auc):
        with pytest.raises(ValueError, match=argument):
            function(y_true, y_score)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_threshold_raises(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        multilabel_metrics(Y_TRUE, Y_SCORE, threshold=threshold)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------


def test_accuracy_hand_case_and_sklearn() -> None:
    assert accuracy([0, 1, 2, 2], [0, 2, 2, 2]) == 0.75
    assert type(accuracy([0], [0])) is float
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "argument"),
    [
        ([0, 1, 2], [0, 1], "y_pred"),  # mismatched lengths
        ([], [], "y_true"),  # empty
        ([[0, 1]], [[0, 1]], "y_true"),  # 2-D
        ([0.0, 1.5], [0, 1], "y_true"),  # not integers
        ([0, 1], [0, -1], "y_pred"),  # negative
        ([0, 1], np.array([[0.2, 0.8], [0.9, 0.1]]), "y_pred"),  # scores instead of labels
    ],
)
def test_accuracy_validation_names_the_argument(y_true: object, y_pred: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        accuracy(y_true, y_pred)


# ---------------------------------------------------------------------------------------------
# Shot groups and single-label metrics
# ---------------------------------------------------------------------------------------------


def test_shot_groups_with_thresholds_uses_strict_inequalities() -> None:
    counts = [500, 101, 100, 50, 20, 19, 5, 0]
    groups = shot_groups(counts, many_min=100, few_max=20)
    np.testing.assert_array_equal(groups["many"], [0, 1])
    np.testing.assert_array_equal(groups["medium"], [2, 3, 4])
    np.testing.assert_array_equal(groups["few"], [5, 6, 7])


def test_shot_groups_thresholds_can_leave_groups_empty() -> None:
    groups = shot_groups([60, 50, 40], many_min=100, few_max=20)
    assert groups["many"].size == 0 and groups["few"].size == 0
    np.testing.assert_array_equal(groups["medium"], [0, 1, 2])


def test_shot_groups_thirds_rule_ten_classes() -> None:
    # Descending order of counts: classes 9, 0, 8, 1, | 7, 2, 6, | 3, 5, 4.
    counts = [900, 700, 500, 300, 100, 200, 400, 600, 800, 1000]
    groups = shot_groups(counts, rule="thirds")
    assert [groups[name].size for name in ("many", "medium", "few")] == [4, 3, 3]
    np.testing.assert_array_equal(groups["many"], [0, 1, 8, 9])
    np.testing.assert_array_equal(groups["medium"], [2, 6, 7])
    np.testing.assert_array_equal(groups["few"], [3, 4, 5])


@pytest.mark.parametrize(
    ("num_classes", "sizes"), [(1, [1, 0, 0]), (2, [1, 1, 0]), (9, [3, 3, 3]), (11, [4, 4, 3])]
)
def test_shot_groups_thirds_rule_sizes(num_classes: int, sizes: list[int]) -> None:
    groups = shot_groups(np.arange(num_classes, 0, -1), rule="thirds")
    assert [groups[name].size for name in ("many", "medium", "few")] == sizes
    together = np.sort(np.concatenate([groups["many"], groups["medium"], groups["few"]]))
    np.testing.assert_array_equal(together, np.arange(num_classes))


def test_shot_groups_thirds_rule_breaks_ties_by_class_index() -> None:
    groups = shot_groups([5, 5, 5, 5], rule="thirds")
    np.testing.assert_array_equal(groups["many"], [0, 1])
    np.testing.assert_array_equal(groups["medium"], [2])
    np.testing.assert_array_equal(groups["few"], [3])


@pytest.mark.parametrize(
    ("counts", "kwargs", "argument"),
    [
        ([[10, 5]], {}, "train_class_counts"),
        ([], {}, "train_class_counts"),
        ([10, -1], {}, "train_class_counts"),
        ([10.5, 3.0], {}, "train_class_counts"),
        ([10, 5], {"many_min": 100}, "few_max"),
        ([10, 5], {"few_max": 20}, "many_min"),
        ([10, 5], {"many_min": -1, "few_max": 0}, "many_min"),
        ([10, 5], {"many_min": 100, "few_max": 2.5}, "few_max"),
        ([10, 5], {"many_min": 10, "few_max": 20}, "few_max"),
        ([10, 5], {"rule": "halves"}, "rule"),
        ([0, 0], {}, "train_class_counts"),  # cumulative shares need a positive total
    ],
)
def test_shot_groups_validation_names_the_argument(counts: object, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        shot_groups(counts, **kwargs)


def test_cumulative_shot_groups_hand_case() -> None:
    # Shares of the sorted counts: .50 .70 .85 .95 1.0. 75% falls in class 2's interval (.70, .85],
    # 95% is reached exactly by class 3 (.85, .95]: many {0, 1, 2}, medium {3}, few {4}.
    groups = cumulative_shot_groups([50, 20, 15, 10, 5])
    np.testing.assert_array_equal(groups["many"], [0, 1, 2])
    np.testing.assert_array_equal(groups["medium"], [3])
    np.testing.assert_array_equal(groups["few"], [4])
    # shot_groups' default rule is this one.
    for name, classes in shot_groups([50, 20, 15, 10, 5]).items():
        np.testing.assert_array_equal(classes, groups[name])


def test_cumulative_shot_groups_sorts_and_breaks_ties_by_class_index() -> None:
    # Sorted: class 1 (30), 2 (30), 3 (20), 0 (10), 4 (10); shares .3 .6 .8 .9 1.0.
    groups = cumulative_shot_groups([10, 30, 30, 20, 10])
    np.testing.assert_array_equal(groups["many"], [1, 2, 3])  # up to the class that reaches .75
    np.testing.assert_array_equal(groups["medium"], [0, 4])  # class 4 reaches .95
    assert groups["few"].size == 0


def test_cumulative_shot_groups_matches_the_interval_definition_on_long_tails() -> None:
    """Class (i) covers (s_(i-1), s_i]: many up to the interval holding 75%, few after the one holding 95%."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        counts = rng.integers(0, 500, size=int(rng.integers(2, 30)))
        counts[0] += 1
        order = np.argsort(-counts, kind="stable")
        shares = np.concatenate([[0.0], np.cumsum(counts[order]) / counts.sum()])
        holder = {cut: next(i for i in range(len(order)) if shares[i] < cut <= shares[i + 1]) for cut in (0.75, 0.95)}
        groups = cumulative_shot_groups(counts)
        np.testing.assert_array_equal(groups["many"], np.sort(order[: holder[0.75] + 1]))
        np.testing.assert_array_equal(groups["medium"], np.sort(order[holder[0.75] + 1 : holder[0.95] + 1]))
        np.testing.assert_array_equal(groups["few"], np.sort(order[holder[0.95] + 1 :]))


def test_cumulative_shot_groups_on_lt_digits_if50() -> None:
    """lt-digits at IF 50 (384 training digits): classes 0-2 hold 74.5% (< 75%), so class 3 (84.1%)
    is the last many-shot class; class 6 is the first to reach 95% (96.9%)."""
    groups = cumulative_shot_groups([139, 89, 58, 37, 24, 15, 10, 6, 4, 2])
    np.testing.assert_array_equal(groups["many"], [0, 1, 2, 3])
    np.testing.assert_array_equal(groups["medium"], [4, 5, 6])
    np.testing.assert_array_equal(groups["few"], [7, 8, 9])


def test_singlelabel_metrics_hand_case() -> None:
    # 6 classes, thirds rule: many {0, 1}, medium {2, 3}, few {4, 5}.
    counts = [60, 50, 40, 30, 20, 10]
    y_true = [0, 0, 1, 2, 3, 3, 4, 5]
    y_pred = [0, 0, 0, 2, 0, 1, 4, 4]
    result = singlelabel_metrics(y_true, y_pred, counts, rule="thirds")
    assert set(result) == {"accuracy", "many", "medium", "few"}
    assert all(type(value) is float for value in result.values())
    assert result["accuracy"] == pytest.approx(4 / 8)
    assert result["many"] == pytest.approx(2 / 3)  # samples of classes 0, 0, 1
    assert result["medium"] == pytest.approx(1 / 3)  # samples of classes 2, 3, 3
    assert result["few"] == pytest.approx(1 / 2)  # samples of classes 4, 5


def test_singlelabel_metrics_with_thresholds_and_empty_group() -> None:
    counts = [500, 50, 10]  # many {0}, medium {1}, few {2}
    result = singlelabel_metrics([0, 0, 1, 1], [0, 1, 1, 1], counts, many_min=100, few_max=20)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["many"] == pytest.approx(0.5)
    assert result["medium"] == 1.0
    assert math.isnan(result["few"])  # class 2 has no test sample


@pytest.mark.parametrize(
    ("y_true", "y_pred", "argument"),
    [
        ([0, 1, 3], [0, 1, 2], "y_true"),  # label outside the 3 classes
        ([0, 1, 2], [0, 1, 3], "y_pred"),
        ([0, 1, 2], [0, 1], "y_pred"),
    ],
)
def test_singlelabel_metrics_validation_names_the_argument(
    y_true: list, y_pred: list, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        singlelabel_metrics(y_true, y_pred, [30, 20, 10])


# ---------------------------------------------------------------------------------------------
# Personalized mean
# ---------------------------------------------------------------------------------------------


def test_personalized_mean_unweighted_and_weighted() -> None:
    assert personalized_mean([0.5, 1.0, 0.75]) == pytest.approx(0.75)
    assert type(personalized_mean([0.5])) is float
    assert personalized_mean([0.5, 1.0], weights=[3, 1]) == pytest.approx(0.625)
    assert personalized_mean([0.5, 1.0], weights=[0, 2]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("accuracies", "weights", "argument"),
    [
        ([], None, "per_client_accuracy"),
        ([[0.5, 0.5]], None, "per_client_accuracy"),
        ([0.5, 1.2], None, "per_client_accuracy"),
        ([0.5, float("nan")], None, "per_client_accuracy"),
        ([0.5, 1.0], [1.0], "weights"),
        ([0.5, 1.0], [1.0, -1.0], "weights"),
        ([0.5, 1.0], [0.0, 0.0], "weights"),
        ([0.5, 1.0], [1.0, float("inf")], "weights"),
    ],
)
def test_personalized_mean_validation_names_the_argument(
    accuracies: list, weights: list | None, argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        personalized_mean(accuracies, weights=weights)
