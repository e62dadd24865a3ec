"""Single-label long-tailed metrics (FedLoGe): accuracy, many/medium/few-shot groups and PM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedapp.metrics.inputs import as_numeric_array

SHOT_GROUP_NAMES: tuple[str, str, str] = ("many", "medium", "few")


def _labels_1d(name: str, value: Any, num_classes: int | None = None) -> np.ndarray:
    """Validated non-empty 1-D int64 array of class indices (>= 0, and < num_classes if given)."""
    array = as_numeric_array(name, value)
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array of class indices; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices; got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{name} must hold class indices >= 0; found {int(array.min())}")
    if num_classes is not None and array.max() >= num_classes:
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}] (train_class_counts has "
            f"{num_classes} classes); found {int(array.max())}"
        )
    return array.astype(np.int64)


def _class_counts(value: Any) -> np.ndarray:
    """Validated non-empty 1-D int64 array of non-negative per-class counts."""
    array = as_numeric_array("train_class_counts", value)
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(
            f"train_class_counts must be a non-empty 1-D array of per-class counts; got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.bool_) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"train_class_counts must hold integer counts; got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"train_class_counts must hold counts >= 0; found {int(array.min())}")
    return array.astype(np.int64)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Top-1 accuracy: the fraction of samples with ``y_pred[i] == y_true[i]``.

    Args:
        y_true: ``(N,)`` integer class indices >= 0, N >= 1.
        y_pred: ``(N,)`` integer class indices >= 0 (e.g. the argmax of the logits).
    """
    true = _labels_1d("y_true", y_true)
    pred = _labels_1d("y_pred", y_pred)
    if pred.shape != true.shape:
        raise ValueError(f"y_pred must have the same length as y_true ({true.shape[0]}); got {pred.shape[0]}")
    return float(np.mean(true == pred))


SHOT_RULES: tuple[str, ...] = ("cumulative", "thirds")
CUMULATIVE_CUTS: tuple[float, float] = (0.75, 0.95)  # FedLoGe's code: util.util.shot_split([75, 95])


def cumulative_shot_groups(
    train_class_counts: Any, cuts: tuple[float, float] = CUMULATIVE_CUTS
) -> dict[str, np.ndarray]:
    """Many/medium/few by cumulative training share, the rule of FedLoGe's code (``shot_split``).

    Sort the classes by descending count n_(1) >= ... >= n_(C) (ties: lower class index first) and
    let s_i = (n_(1) + ... + n_(i)) / sum(n) be the cumulative share of the first i classes
    (s_0 = 0). Class (i) covers the share interval (s_(i-1), s_i]. With cuts (a, b) = (0.75, 0.95):

    - many:   the classes up to and including the one whose interval contains a: i <= i_a,
      i_a = min{i : s_i >= a};
    - medium: i_a < i <= i_b, i_b = min{i : s_i >= b};
    - few:    i > i_b.

    So the many-shot classes are the fewest head classes holding at least 75% of the training
    samples, and the few-shot classes are the tail holding less than the last 5%. If both cuts
    fall in one class's interval (i_a = i_b), medium is empty.

    Hand example, counts (50, 20, 15, 10, 5) (shares .50 .70 .85 .95 1.0): 0.75 falls in class 2's
    interval (.70, .85] and 0.95 in class 3's (.85, .95], so many = {0, 1, 2}, medium = {3},
    few = {4}.

    Args:
        train_class_counts: ``(C,)`` non-negative integer training counts per class, positive sum.
        cuts: the two cumulative shares ``0 < a <= b <= 1``.

    Returns:
        ``{"many", "medium", "few"}`` -> sorted int64 arrays of class indices partitioning ``range(C)``.
    """
    counts = _class_counts(train_class_counts)
    low, high = (float(x) for x in cuts)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"cuts must satisfy 0 < a <= b <= 1; got {cuts!r}")
    total = int(counts.sum())
    if total <= 0:
        raise ValueError("train_class_counts must have a positive sum for the cumulative shot split; got all zeros")
    order = np.argsort(-counts, kind="stable")
    # s_i >= a compared in integers (cumsum_i * 10^4 >= round(a * 10^4) * total), so a class whose
    # cumulative share is exactly 75% is counted as reaching the cut, as the definition says.
    cumulative = np.cumsum(counts[order])
    first_low = int(np.argmax(cumulative * 10_000 >= round(low * 10_000) * total))
    first_high = int(np.argmax(cumulative * 10_000 >= round(high * 10_000) * total))
    parts = (order[: first_low + 1], order[first_low + 1 : first_high + 1], order[first_high + 1 :])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SHOT_GROUP_NAMES, parts)}


def shot_groups(
    train_class_counts: Any, many_min: int | None = None, few_max: int | None = None, rule: str = "cumulative"
) -> dict[str, np.ndarray]:
    """Split the classes into many-, medium- and few-shot groups by their training sample count.

    With thresholds (the long-tail convention of Liu et al. 2019, which FedLoGe follows for
    ImageNet-LT, is ``many_min=100, few_max=20``), with n_c = ``train_class_counts[c]``:

    - many:   n_c > many_min
    - few:    n_c < few_max
    - medium: few_max <= n_c <= many_min

    Both thresholds must be given together, and ``few_max <= many_min + 1`` so that no class is both
    many and few.

    Without thresholds (both None), ``rule`` decides:

    - ``"cumulative"`` (default): :func:`cumulative_shot_groups`, the 75% / 95% cumulative-share
      cuts of FedLoGe's code (run-config ``shot-split=cumulative``);
    - ``"thirds"``: the classes sorted by descending count (ties broken by the lower class index
      first) are cut into three contiguous groups whose sizes differ by at most one, the earlier
      groups taking the extra classes (``np.array_split``): 10 classes -> 4, 3, 3; 11 -> 4, 4, 3;
      2 -> 1, 1, 0 (``shot-split=thirds``, this app's rule before it followed the authors').

    Args:
        train_class_counts: ``(C,)`` non-negative integer training counts per class.
        many_min: many-shot classes have strictly more training samples than this (int >= 0).
        few_max: few-shot classes have strictly fewer training samples than this (int >= 0).
        rule: ``"cumulative"`` or ``"thirds"``; read only without thresholds.

    Returns:
        ``{"many", "medium", "few"}`` -> sorted int64 arrays of class indices; together they
        partition ``range(C)``. A group may be empty.
    """
    counts = _class_counts(train_class_counts)
    if (many_min is None) != (few_max is None):
        raise ValueError(
            f"many_min and few_max must be given together or both left None (rule {rule!r}); "
            f"got many_min={many_min!r}, few_max={few_max!r}"
        )
    if rule not in SHOT_RULES:
        raise ValueError(f"rule must be one of {', '.join(SHOT_RULES)}; got {rule!r}")
    if many_min is None or few_max is None:
        if rule == "cumulative":
            return cumulative_shot_groups(counts)
        order = np.argsort(-counts, kind="stable")
        parts = np.array_split(order, 3)
        return {name: np.sort(part).astype(np.int64) for name, part in zip(SHOT_GROUP_NAMES, parts)}
    for name, value in (("many_min", many_min), ("few_max", few_max)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 or None; got {value!r}")
    if few_max > many_min + 1:
        raise ValueError(
            f"few_max must be <= many_min + 1 so that no class is both many- and few-shot; "
            f"got many_min={many_min}, few_max={few_max}"
        )
    many = np.flatnonzero(counts > many_min)
    few = np.flatnonzero(counts < few_max)
    medium = np.flatnonzero((counts >= few_max) & (counts <= many_min))
    return {"many": many.astype(np.int64), "medium": medium.astype(np.int64), "few": few.astype(np.int64)}


def singlelabel_metrics(
    y_true: Any,
    y_pred: Any,
    train_class_counts: Any,
    many_min: int | None = None,
    few_max: int | None = None,
    rule: str = "cumulative",
) -> dict[str, float]:
    """Top-1 accuracy overall and on the many/medium/few-shot class groups.

    ``accuracy`` is :func:`accuracy` over all N test samples. ``many``, ``medium`` and ``few`` are
    the accuracy over the test samples whose *true* class lies in that group of
    :func:`shot_groups` (``train_class_counts``, ``many_min``, ``few_max``, ``rule``); NaN when no test sample
    belongs to the group (the group is empty or its classes are absent from the test set).
    Computed on the global model over the balanced global test set, ``accuracy`` is FedLoGe's GM.

    Args:
        y_true: ``(N,)`` integer class indices in [0, C).
        y_pred: ``(N,)`` integer class indices in [0, C).
        train_class_counts: ``(C,)`` non-negative integer training counts per class; C fixes the
            number of classes.
        many_min, few_max: the thresholds of :func:`shot_groups` (both None: ``rule``).
        rule: :func:`shot_groups`'s rule without thresholds, ``"cumulative"`` or ``"thirds"``.

    Returns:
        ``{"accuracy", "many", "medium", "few"}`` as Python floats.
    """
    counts = _class_counts(train_class_counts)
    true = _labels_1d("y_true", y_true, num_classes=counts.shape[0])
    pred = _labels_1d("y_pred", y_pred, num_classes=counts.shape[0])
    if pred.shape != true.shape:
        raise ValueError(f"y_pred must have the same length as y_true ({true.shape[0]}); got {pred.shape[0]}")
    groups = shot_groups(counts, many_min=many_min, few_max=few_max, rule=rule)
    correct = true == pred
    result = {"accuracy": float(np.mean(correct))}
    for name in SHOT_GROUP_NAMES:
        in_group = np.isin(true, groups[name])
        result[name] = float(np.mean(correct[in_group])) if in_group.any() else math.nan
    return result


def personalized_mean(per_client_accuracy: Sequence[float] | np.ndarray, weights: Any = None) -> float:
    """PM: the mean over clients of each client's accuracy on its own local test set.

    FedLoGe's definition is the unweighted mean ``(1/K) Σ_k acc_k`` (each client's local test set is
    drawn from the global test set with that client's training class distribution). With
    ``weights`` (e.g. local test set sizes) it is ``Σ_k w_k acc_k / Σ_k w_k`` instead.

    Args:
        per_client_accuracy: ``(K,)`` accuracies, each finite and in [0, 1], K >= 1.
        weights: optional ``(K,)`` finite non-negative weights with a positive sum.
    """
    accs = as_numeric_array("per_client_accuracy", per_client_accuracy)
    if accs.ndim != 1 or accs.shape[0] < 1:
        raise ValueError(
            f"per_client_accuracy must be a non-empty 1-D sequence of accuracies; got shape {accs.shape}"
        )
    accs = accs.astype(np.float64)
    if not np.all(np.isfinite(accs)) or accs.min() < 0.0 or accs.max() > 1.0:
        bad = accs[~(np.isfinite(accs) & (accs >= 0.0) & (accs <= 1.0))][0].item()
        raise ValueError(f"per_client_accuracy must hold fractions in [0, 1]; found {bad!r}")
    if weights is None:
        return float(accs.mean())
    w = as_numeric_array("weights", weights)
    if w.shape != accs.shape:
        raise ValueError(
            f"weights must have the same shape as per_client_accuracy {accs.shape}; got shape {w.shape}"
        )
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or w.min() < 0.0:
        raise ValueError("weights must be finite and >= 0; found a negative, NaN or infinite weight")
    if w.sum() <= 0.0:
        raise ValueError("weights must have a positive sum; got all zeros")
    return float(np.dot(w, accs) / w.sum())
