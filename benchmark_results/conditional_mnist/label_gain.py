r"""How much of log 10 a class-conditional run's model takes, from its checkpoint.

For every test image x with label y it evaluates log p(x | y') for all ten labels y' and
reports, in nats/image over the test split:
  conditional   -log p(x | y)                                  (what evaluate reports)
  mixture       -log p(x), p(x) = mean over y' of p(x | y')    (the same model, unconditional)
  gain          mixture - conditional, in [0, log 10]: the label's information as the
                model sees it (I(x; y) under the model, for a uniform prior over classes)
  accuracy      of the model's Bayes classifier argmax_y' p(x | y')

Run (from the repository root):
  python benchmark_results/conditional_mnist/label_gain.py CONFIG WORKDIR [override=value ...]
e.g. `... row_lstm_mnist_conditional /tmp/m14/row_lstm_c10 data.name=embedded_binarized_mnist
data.strict=True` (the overrides the run was trained with).
"""

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments import configs
from pixel_rnn_jax import data, likelihood, train


def main(name, workdir, *overrides):
    config = configs.get_config(name)
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = type(node[leaf])(value == "True" if isinstance(node[leaf], bool) else value)
    loaded = train.load_checkpoint(config, workdir)
    model, params, classes = loaded.model, loaded.params, config.model.num_classes

    @jax.jit
    def all_labels(images):  # [classes, batch]: log p(x | y') for every label y'
        def one(label):
            labels = jnp.full((images.shape[0],), label, jnp.int32)
            logits = model.apply({"params": params}, images, labels)
            return likelihood.log_likelihood(logits, images, loaded.spec.num_levels)

        return jax.lax.map(one, jnp.arange(classes))

    rows = []
    for batch in data.eval_batches(loaded.spec, config.data, 64, with_labels=True):
        log_p = np.asarray(all_labels(jnp.asarray(batch["image"], jnp.int32)))  # [K, batch]
        keep = batch["mask"]
        own = log_p[batch["label"], np.arange(log_p.shape[1])]
        mixture = np.logaddexp.reduce(log_p, axis=0) - math.log(classes)
        rows.append(np.stack([-own, -mixture, log_p.argmax(0) == batch["label"]])[:, keep])
    conditional, mixture, correct = np.concatenate(rows, axis=1)
    result = {
        "step": loaded.step,
        "num_images": int(conditional.size),
        "conditional_nll": float(conditional.mean()),
        "mixture_nll": float(mixture.mean()),
        "gain_nats": float((mixture - conditional).mean()),
        "log_10": math.log(classes),
        "bayes_accuracy": float(correct.mean()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
