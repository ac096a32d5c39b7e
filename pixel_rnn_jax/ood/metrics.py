"""Detection metrics with out-of-distribution as the positive class (scikit-learn's)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics


def _labelled(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    if not len(in_scores) or not len(out_scores):
        raise ValueError("Both sets need at least one score.")
    if not (np.isfinite(in_scores).all() and np.isfinite(out_scores).all()):
        raise ValueError("Scores must be finite.")
    labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return labels, np.concatenate([in_scores, out_scores])


def _fpr_at_tpr(labels, scores, tpr_target: float) -> float:
    fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
    # The smallest false-positive rate among thresholds that catch at least tpr_target.
    return float(fpr[np.searchsorted(tpr, tpr_target, side="left")])


def detection_metrics(in_scores, out_scores) -> dict[str, float]:
    """AUROC, AUPRC and FPR at 95% / 80% TPR of "score > t means out-of-distribution".

    Args:
      in_scores: `[n_in]` scores of in-distribution images (negatives).
      out_scores: `[n_out]` scores of out-of-distribution images (positives).

    Returns:
      {'auroc', 'auprc' (average precision, OOD positive), 'fpr_at_95_tpr', 'fpr_at_80_tpr'}.
    """
    labels, scores = _labelled(in_scores, out_scores)
    return {
        "auroc": float(sk_metrics.roc_auc_score(labels, scores)),
        "auprc": float(sk_metrics.average_precision_score(labels, scores)),
        "fpr_at_95_tpr": _fpr_at_tpr(labels, scores, 0.95),
        "fpr_at_80_tpr": _fpr_at_tpr(labels, scores, 0.80),
    }


def bootstrap_auroc(
    in_scores, out_scores, *, num_resamples: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap interval for the AUROC, resampling each set with replacement."""
    in_scores, out_scores = np.asarray(in_scores, float), np.asarray(out_scores, float)
    _labelled(in_scores, out_scores)
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    values = []
    for _ in range(num_resamples):
        resampled = np.concatenate(
            [rng.choice(in_scores, len(in_scores)), rng.choice(out_scores, len(out_scores))]
        )
        values.append(sk_metrics.roc_auc_score(labels, resampled))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
