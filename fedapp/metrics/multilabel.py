"""Multi-label metrics (FedNCAlign-ML): macro/micro ROC-AUC and macro/micro F1."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedapp.metrics.inputs import as_numeric_array


def _check_2d(name: str, array: np.ndarray) -> None:
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_classes) with n_samples >= 1 and "
            f"n_classes >= 1; got shape {array.shape}"
        )


def _multilabel_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true as int64 0/1, y_score as float64 in [0, 1])`` of equal shape (N, C)."""
    true = as_numeric_array("y_true", y_true)
    _check_2d("y_true", true)
    bad = true[(true != 0) & (true != 1)]
    if bad.size:
        raise ValueError(
            f"y_true must be multi-hot, containing only 0 and 1; found value {bad.flat[0].item()!r}"
        )
    score = as_numeric_array("y_score", y_score)
    _check_2d("y_score", score)
    if score.shape != true.shape:
        raise ValueError(
            f"y_score must have the same shape as y_true {true.shape} (n_samples, n_classes); "
            f"got shape {score.shape}"
        )
    score = score.astype(np.float64)
    if not np.all(np.isfinite(score)):
        raise ValueError("y_score must be finite probabilities in [0, 1]; found NaN or infinity")
    if score.min() < 0.0 or score.max() > 1.0:
        raise ValueError(
            f"y_score must be probabilities in [0, 1] (apply the sigmoid to logits first); "
            f"got values in [{score.min():g}, {score.max():g}]"
        )
    return true.astype(np.int64), score


def per_class_auc(y_true: Any, y_score: Any) -> np.ndarray:
    """ROC-AUC of each class, shape ``(C,)`` float64, NaN where the class's AUC is undefined.

    Column ``c`` gives ``roc_auc_score(y_true[:, c], y_score[:, c])``: the probability that a random
    positive sample of class c scores above a random negative one (ties count one half). It is
    undefined, hence NaN, for a class with no positive or no negative sample in ``y_true``.

    Args:
        y_true: ``(N, C)`` multi-hot labels, values 0/1 (bool, int or float dtype).
        y_score: ``(N, C)`` probabilities in [0, 1] (sigmoid outputs).
    """
    from sklearn.metrics import roc_auc_score  # here: a ClientApp that only trains never pays for sklearn

    true, score = _multilabel_inputs(y_true, y_score)
    aucs = np.full(true.shape[1], np.nan, dtype=np.float64)
    for c in range(true.shape[1]):
        positives = int(true[:, c].sum())
        if 0 < positives < true.shape[0]:
            aucs[c] = roc_auc_score(true[:, c], score[:, c])
    return aucs


def multilabel_metrics(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, float]:
    """Macro/micro ROC-AUC and F1 of multi-label scores.

    Definitions (``pred = (y_score >= threshold)``, per class c: TP/FP/FN counted over samples):

    - ``macro_auc``: mean of :func:`per_class_auc` over the classes where it is defined, i.e. the
      classes with at least one positive and one negative sample; the others are left out (unlike
      sklearn's ``roc_auc_score(average="macro")``, which raises on them). NaN if no class has it.
    - ``micro_auc``: the AUC of all N*C (label, score) pairs pooled, as sklearn's
      ``roc_auc_score(y_true, y_score, average="micro")``; NaN if the pooled labels are all 0 or all 1.
    - ``macro_f1``: as sklearn's ``f1_score(y_true, pred, average="macro", zero_division=0)``: the unweighted
      mean over **all** C classes of ``2TP / (2TP + FP + FN)``; a class with no positive and no
      predicted positive scores 0 (sklearn semantics, so numbers match what users compute).
    - ``micro_f1``: as sklearn's ``f1_score(y_true, pred, average="micro", zero_division=0)``:
      ``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)`` with the counts summed over classes; 0 if all three sums are 0.

    With C = 1 the definitions still hold for the single label (sklearn itself would read an
    ``(N, 1)`` label matrix as a binary target and micro-average F1 over both values 0 and 1).

    Args:
        y_true: ``(N, C)`` multi-hot labels, values 0/1 (bool, int or float dtype).
        y_score: ``(N, C)`` probabilities in [0, 1] (sigmoid outputs, not logits).
        threshold: a score ``>= threshold`` predicts the label; a real number in [0, 1].

    Returns:
        ``{"macro_auc", "micro_auc", "macro_f1", "micro_f1"}`` as Python floats.
    """
    is_real = isinstance(threshold, (int, float, np.integer, np.floating))
    if isinstance(threshold, (bool, np.bool_)) or not is_real:
        raise ValueError(f"threshold must be a real number in [0, 1]; got {threshold!r}")
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a real number in [0, 1]; got {threshold!r}")
    true, score = _multilabel_inputs(y_true, y_score)
    aucs = per_class_auc(true, score)
    defined = aucs[~np.isnan(aucs)]
    macro_auc = float(defined.mean()) if defined.size else math.nan
    positives = int(true.sum())
    if 0 < positives < true.size:
        from sklearn.metrics import roc_auc_score  # lazy, as in per_class_auc

        micro_auc = float(roc_auc_score(true.ravel(), score.ravel()))
    else:
        micro_auc = math.nan
    pred = score >= float(threshold)
    positive = true == 1
    tp = np.sum(pred & positive, axis=0)
    fp = np.sum(pred & ~positive, axis=0)
    fn = np.sum(~pred & positive, axis=0)
    return {
        "macro_auc": macro_auc,
        "micro_auc": micro_auc,
        "macro_f1": float(np.mean(_f1_from_counts(tp, fp, fn))),
        "micro_f1": float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum())),
    }


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``2TP / (2TP + FP + FN)`` elementwise, 0 where the denominator is 0 (sklearn, zero_division=0).

    Equal to sklearn's ``f1_score(..., zero_division=0)``; computed from counts because sklearn
    reads an ``(N, 1)`` label matrix as a binary target and then micro-averages over {0, 1}.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2.0 * tp + fp + fn
    return np.divide(2.0 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)
