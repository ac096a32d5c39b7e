"""Building blocks shared by every model, with no knowledge of any particular model.

- `masks`: the R->G->B feature groups and the mask-A / mask-B kernel masks.
- `layers`: masked convolutions (as tap-pruned matmuls), the output stack, image checks.
- `recurrence`: the scan / unrolled / Python-loop driver of every recurrence.
- `lstm_cell`: the LSTM cell and its hand-written forward/backward sweep.
- `incremental`: one-pixel versions of the masked layers, the pieces each model's cached
  body (in `pixel_rnn_jax.models`) is assembled from.
"""
