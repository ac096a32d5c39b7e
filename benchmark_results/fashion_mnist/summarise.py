"""Collects a finished Fashion-MNIST run into benchmark_results/fashion_mnist/<config>/.

  python benchmark_results/fashion_mnist/summarise.py --workdir=RUN --name=row_lstm_fashion_mnist

Writes `curve.md` (train loss, a mean over each logging interval, and the validation NLL at
every evaluation, both in bits/dim), `curve.png` (the same, drawn), `final.json` (the run's
last metrics row: the validation-selected checkpoint's test NLL) and copies the last
sample and completion grids. Reads only the workdir's `metrics.jsonl` and `images/`.
"""

import argparse
import glob
import json
import os
import shutil

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _plot(train, valid, path, size=(640, 400), margin=48):
    """Two polylines, bits/dim against step, on linear axes, with tick labels."""
    points = train + valid
    x_max = max(s for s, _ in points)
    y_lo, y_hi = min(v for _, v in points), max(v for _, v in points)
    y_hi = min(y_hi, y_lo + 1.0)  # the first steps' losses would flatten the rest
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size[0] - 2 * margin, size[1] - 2 * margin

    def xy(step, value):
        value = min(value, y_hi)
        return margin + w * step / x_max, margin + h * (y_hi - value) / (y_hi - y_lo)

    draw.rectangle([margin, margin, margin + w, margin + h], outline="black")
    for i in range(6):
        value = y_lo + (y_hi - y_lo) * i / 5
        _, y = xy(0, value)
        draw.text((4, y - 6), f"{value:.2f}", fill="black")
        step = x_max * i / 5
        x, _ = xy(step, y_lo)
        draw.text((x - 12, margin + h + 6), f"{step:.0f}", fill="black")
    for series, colour in ((train, "steelblue"), (valid, "firebrick")):
        if len(series) > 1:
            draw.line([xy(s, v) for s, v in series], fill=colour, width=2)
        for s, v in series:
            x, y = xy(s, v)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((margin, 8), "bits/dim vs step: train (blue), validation (red)", fill="black")
    image.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    out = os.path.join(HERE, args.name)
    os.makedirs(out, exist_ok=True)
    rows = _rows(args.workdir)
    train = [(r["step"], r["train/bits_per_dim"]) for r in rows if "train/bits_per_dim" in r]
    valid = [(r["step"], r["eval/bits_per_dim"]) for r in rows if "eval/bits_per_dim" in r]
    lines = ["| step | train bits/dim | validation bits/dim |", "|---|---|---|"]
    valid_at = dict(valid)
    for step, value in train:
        if step % 1000 == 0 or step in valid_at:
            shown = f"{valid_at[step]:.4f}" if step in valid_at else ""
            lines.append(f"| {step} | {value:.4f} | {shown} |")
    with open(os.path.join(out, "curve.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot(train, valid, os.path.join(out, "curve.png"))
    with open(os.path.join(out, "final.json"), "w") as handle:
        json.dump(rows[-1], handle, indent=1)
    for kind in ("samples", "completions"):
        grids = sorted(glob.glob(os.path.join(args.workdir, "images", f"{kind}*.png")))
        if grids:
            shutil.copy(grids[-1], os.path.join(out, f"{kind}.png"))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
