"""A finished run's curve, final numbers and last grids, for the notes and benchmark_results/.

`write_summary(workdir, output)` writes `curve.md` (the train loss, a mean over each logging
interval, and the validation NLL at every evaluation, both in bits/dim), `curve.png` (the
same, drawn with matplotlib), `final.json` (the run's last metrics row: for a dataset with a
validation split, the selected checkpoint's test NLL) and copies of the last sample and
completion grids. It reads only the workdir's `metrics.jsonl` and `images/`. The entry point
is `python -m experiments.summarise`.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from pixel_rnn_jax import errors


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `workdir/metrics.jsonl`; a missing or unreadable file is a UserError."""
    path = os.path.join(workdir, "metrics.jsonl")
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        raise errors.NoCheckpointError(
            f"{path} does not exist: --workdir must be a run directory of experiments.train."
        ) from None
    except json.JSONDecodeError as error:
        raise errors.WorkdirError(f"{path} is not JSON lines ({error}).") from None


def curves(rows: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, validation) lists of (step, bits/dim) from metrics rows."""
    train = [(r["step"], r["train/bits_per_dim"]) for r in rows if "train/bits_per_dim" in r]
    valid = [(r["step"], r["eval/bits_per_dim"]) for r in rows if "eval/bits_per_dim" in r]
    return train, valid


def curve_table(train, valid, every: int = 1000) -> str:
    """Markdown: train bits/dim every `every` steps and at each evaluation, beside validation."""
    lines = ["| step | train bits/dim | validation bits/dim |", "|---|---|---|"]
    valid_at = dict(valid)
    for step, value in train:
        if step % every == 0 or step in valid_at:
            shown = f"{valid_at[step]:.4f}" if step in valid_at else ""
            lines.append(f"| {step} | {value:.4f} | {shown} |")
    return "\n".join(lines) + "\n"


def plot_curve(train, valid, path: str, title: str) -> None:
    """Bits/dim against step, train and validation; the first steps' losses clipped."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    if train:
        axis.plot(*zip(*train, strict=True), color="steelblue", linewidth=1, label="train")
    if valid:
        axis.plot(*zip(*valid, strict=True), "o-", color="firebrick", label="validation")
    values = [v for _, v in train + valid]
    if values:
        low = min(values)
        axis.set_ylim(low - 0.02, min(max(values), low + 1.0) + 0.02)
    axis.set(xlabel="step", ylabel="bits/dim", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(workdir: str, output: str, title: str | None = None) -> list[str]:
    """Writes the run's summary files into `output`; returns their names."""
    rows = read_metrics(workdir)
    if not rows:
        raise errors.WorkdirError(f"{workdir}/metrics.jsonl has no rows yet.")
    train, valid = curves(rows)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "curve.md"), "w") as handle:
        handle.write(curve_table(train, valid))
    plot_curve(train, valid, os.path.join(output, "curve.png"), title or os.path.basename(output))
    with open(os.path.join(output, "final.json"), "w") as handle:
        json.dump(rows[-1], handle, indent=1)
    written = ["curve.md", "curve.png", "final.json"]
    for kind in ("samples", "completions"):
        grids = sorted(glob.glob(os.path.join(workdir, "images", f"{kind}*.png")))
        if grids:
            shutil.copy(grids[-1], os.path.join(output, f"{kind}.png"))
            written.append(f"{kind}.png")
    return written
