"""Out-of-distribution detection with exact likelihoods (Fashion-MNIST -> MNIST and beyond).

A model trained on one image distribution gives every image an exact log-likelihood, per
image and per sub-pixel. The raw likelihood is a poor out-of-distribution score (Nalisnick et
al. 2019: a Fashion-MNIST model prefers MNIST digits); the scores here correct it with a
second likelihood or a compressor's length:

    bits = ood.pixel_bits(model, variables, images)          # [n, H, W, C] -log2 p per sub-pixel
    raw = ood.raw_score(bits)                                # bits/dim, higher = more unusual
    ratio = ood.likelihood_ratio_score(bits, background_bits)   # Ren et al. 2019
    local = ood.likelihood_ratio_score(bits, local_bits)        # this project's own score
    complexity = ood.input_complexity_score(bits, codec_bits)   # Serra et al. 2020
    combined = ood.combined_score({...}, {...})              # z-sum, fitted on validation
    metrics = ood.detection_metrics(in_scores, out_scores)   # AUROC, AUPRC, FPR at 95/80% TPR

Modules: `scores` (per-pixel bits and every score, typicality), `metrics` (AUROC and friends
from scikit-learn, bootstrap intervals), `sets` (the offline out-of-distribution sets).
"""

from pixel_rnn_jax.ood.metrics import bootstrap_auroc, detection_metrics
from pixel_rnn_jax.ood.scores import (
    Typicality,
    combined_score,
    input_complexity_score,
    likelihood_ratio_score,
    pixel_bits,
    raw_score,
)
from pixel_rnn_jax.ood.sets import SET_DESCRIPTIONS, make_set

__all__ = [
    "SET_DESCRIPTIONS",
    "Typicality",
    "bootstrap_auroc",
    "combined_score",
    "detection_metrics",
    "input_complexity_score",
    "likelihood_ratio_score",
    "make_set",
    "pixel_bits",
    "raw_score",
]
