"""Parameter counts of the named experiments' models.

python -m experiments.model_summary                      # every non-smoke config
python -m experiments.model_summary --configs=row_lstm_mnist,pixelcnn_cifar10
"""

from absl import flags

from experiments import cli, configs
from pixel_rnn_jax import models

_CONFIGS = flags.DEFINE_list("configs", None, "Config names; default: all non-smoke configs.")


def main(argv):
    del argv
    names = _CONFIGS.value or [n for n in configs.list_configs() if not n.endswith("_smoke")]
    print("| config | model | layers | h | channels | levels | parameters |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        model_config = configs.get_config(name).model
        count = models.count_parameters(model_config)
        m = model_config
        print(
            f"| {name} | {m.name} | {m.num_layers} | {m.hidden_dim} | {m.num_channels} | "
            f"{m.num_levels} | {count:,} |"
        )


if __name__ == "__main__":
    cli.run(main)
