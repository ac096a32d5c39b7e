#!/bin/bash
# Equal budget: same config file, steps, batch, seed; only model.num_classes differs.
cd /work/wt14
export TFDS_DATA_DIR=/tmp/tfds14
for model in row_lstm diagonal_bilstm; do
  for classes in 10 0; do
    /work/main/.venv/bin/python -m experiments.train --config=${model}_mnist_conditional \
      --workdir=/tmp/m14/${model}_c${classes} \
      --config.data.name=embedded_binarized_mnist --config.data.strict=True \
      --config.model.num_classes=${classes} \
      --config.train.num_steps=600 --config.train.log_every=100 \
      --config.train.eval_every=0 --config.train.checkpoint_every=600 \
      > /tmp/m14/${model}_c${classes}.log 2>&1
  done
done
echo finished > /tmp/m14/DONE
