"""Background model for the likelihood ratio (Ren et al. 2019) of `diagonal_bilstm_fashion_mnist`.

The same architecture, data and optimiser as `diagonal_bilstm_fashion_mnist`, trained on
perturbed inputs: each training pixel is replaced, with probability `data.perturb_rate` (mu),
by a uniform random level, with an L2 weight penalty `train.l2_weight` (lambda). The model
learns the population's low-level statistics, and log p_main(x) - log p_background(x) cancels
them (`python -m experiments.ood --background_config=...`).

(mu, lambda) = (0.2, 0) are fixed from Ren et al.'s grid (mu in {0.1, 0.2, 0.3}, lambda in
{0, 10, 100}) without looking at any out-of-distribution image: mu = 0.2 is the grid's middle;
lambda = 0 because this run is shorter than the main model's (below), so it is far from
overfitting. Ren et al. tuned both on NotMNIST, an outlier set; nothing here was tuned.
Training length: `num_steps` is a sixth of the main run's 24,000, what the shared 2-core CPU
allowed (the notes, "Out-of-distribution detection (issue 28)", give the run and its curve);
evaluation and checkpoint selection use the clean validation images.

Run (after preparing `fashion_mnist`, see `base.make_fashion_mnist`):
  python -m experiments.train --config=diagonal_bilstm_fashion_mnist_background \
    --config.data.strict=True --workdir=/root/runs/diagonal_bilstm_fashion_mnist_background

Paper: no PixelRNN result; Ren et al.'s PixelCNN++ likelihood ratio reaches AUROC 0.994 on
Fashion-MNIST -> MNIST (REFERENCE.md).
"""

from experiments.configs import base


def get_config():
    """Returns the locked config."""
    config = base.make_fashion_mnist(base.get_config(), "diagonal_bilstm")
    config.data.perturb_rate = 0.2  # mu
    config.train.l2_weight = 0.0  # lambda
    config.train.num_steps = 4_000
    config.paper_result = (
        "background model of a likelihood ratio: Ren et al. 2019 (PixelCNN++) reach AUROC "
        "0.994 on Fashion-MNIST -> MNIST"
    )
    return config
