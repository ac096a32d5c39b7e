"""Tests of the detection metrics (pixel_rnn_jax.ood.metrics) against hand-checked values."""

import numpy as np
import pytest

from pixel_rnn_jax import ood


def test_metrics_agree_with_a_hand_checked_example():
    # Sorted by score: 0.8 out, 0.4 in, 0.35 out, 0.1 in. Of the 4 (in, out) pairs the out
    # score is higher in 3: AUROC 0.75. Precision is 1 at recall 1/2 and 2/3 at recall 1:
    # average precision (1 + 2/3) / 2. Catching both outliers (TPR 1 >= 0.95 or 0.80) needs
    # the threshold below 0.35, which also flags 0.4: FPR 1/2.
    metrics = ood.detection_metrics([0.1, 0.4], [0.35, 0.8])
    assert metrics == pytest.approx(
        {"auroc": 0.75, "auprc": 5 / 6, "fpr_at_95_tpr": 0.5, "fpr_at_80_tpr": 0.5}
    )
    # Catching 80% of 5 outliers needs 4: a threshold between 0.3 and 0.5 flags no inlier;
    # catching all 5 needs it below 0.25, which flags the inlier 0.3.
    metrics = ood.detection_metrics([0.1, 0.2, 0.3], [0.5, 0.6, 0.7, 0.8, 0.25])
    assert metrics["fpr_at_80_tpr"] == 0.0 and metrics["fpr_at_95_tpr"] == pytest.approx(1 / 3)


def test_separated_sets_and_bootstrap_interval():
    rng = np.random.default_rng(0)
    assert ood.bootstrap_auroc([0.0, 0.1], [1.0, 2.0], num_resamples=20) == (1.0, 1.0)
    inside, outside = rng.normal(0, 1, 400), rng.normal(1, 1, 400)
    auroc = ood.detection_metrics(inside, outside)["auroc"]
    low, high = ood.bootstrap_auroc(inside, outside, num_resamples=100)
    assert low < auroc < high and high - low < 0.1
    with pytest.raises(ValueError, match="finite"):
        ood.detection_metrics([0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        ood.detection_metrics([], [1.0])
