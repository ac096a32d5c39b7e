"""The tables and pictures of `experiments.ood`: scores -> metrics -> report.md/json, PNGs.

Tooling beside its entry point (matplotlib is a plotting dependency, not the library's).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from pixel_rnn_jax import ood

TYPICALITY_BATCHES = (1, 5)
SCORE_TITLES = {
    "raw": "raw -log2 p(x)",
    "background_ratio": "likelihood ratio (background)",
    "local_ratio": "ratio to the local model (ours)",
    "typicality_1": "typicality, n=1",
    "typicality_5": "typicality, n=5",
    "combined": "combined: summed |z| of every score (ours)",
}
# Sets of images that are not out-of-distribution sets.
IN_DISTRIBUTION = ("test", "fit")


def _title(score: str) -> str:
    if score.startswith("complexity:"):
        return f"input complexity ({score.split(':', 1)[1]})"
    return SCORE_TITLES.get(score, score)


def _family(score: str) -> str:
    return "complexity" if score.startswith("complexity:") else score


def image_scores(per_pixel: dict[str, np.ndarray], codec_bits: dict[str, np.ndarray]):
    """Every per-image score of one set: {score name: `[n]`}, higher = more unusual."""
    main = per_pixel["main"]
    scores = {"raw": ood.raw_score(main)}
    if "background" in per_pixel:
        scores["background_ratio"] = ood.likelihood_ratio_score(main, per_pixel["background"])
    if "local" in per_pixel:
        scores["local_ratio"] = ood.likelihood_ratio_score(main, per_pixel["local"])
    for codec, sizes in codec_bits.items():
        scores[f"complexity:{codec}"] = ood.input_complexity_score(main, sizes)
    return scores


def build(
    per_pixel,
    codec_bits,
    *,
    train_raw,
    bootstrap: int,
    seed: int,
    published: dict[str, str],
    runs: dict[str, Any],
    fit_split: str,
    eval_split: str,
) -> dict[str, Any]:
    """Scores and metrics of every score on every set against the in-distribution images.

    Args:
      per_pixel: {set: {role: `[n, H, W, C]` bits}} with set 'test' the in-distribution
        images, 'fit' the held-out in-distribution images scores are fitted on, and roles
        'main' (+ 'background', 'local').
      codec_bits: {set: {codec: `[n]` bits}}, the same sets.
      train_raw: raw scores of training images (the typicality mean).
      bootstrap: AUROC interval resamples (0: none).
      seed: bootstrap seed.
      published: published Fashion-MNIST -> MNIST AUROC per score family.
      runs: {role: {'workdir', 'step'}}.
      fit_split, eval_split: the splits used, for the report.

    Returns:
      A dict: 'rows' (one per score and set), 'scores' (per-set arrays for the pictures, not
      written to JSON), 'typicality', 'runs', 'splits', 'sizes', 'mean_raw'.
    """
    fit_scores = image_scores(per_pixel["fit"], codec_bits["fit"])
    # Every per-image score enters the combination; one that is constant on the fit images
    # (a reference model identical to the main one) carries no evidence and cannot be scaled.
    combined_of = [name for name in fit_scores if np.std(fit_scores[name]) > 0]
    tests = {
        n: ood.Typicality.fit(train_raw, fit_scores["raw"], n, seed=seed)
        for n in TYPICALITY_BATCHES
    }

    def all_scores(name):
        scores = image_scores(per_pixel[name], codec_bits[name])
        if len(combined_of) > 1:
            scores["combined"] = ood.combined_score(
                {key: scores[key] for key in combined_of},
                {key: fit_scores[key] for key in combined_of},
            )
        for n, test in tests.items():
            scores[f"typicality_{n}"] = test.batch_scores(scores["raw"])
        return scores

    in_scores = all_scores("test")
    rows, scores = [], {"test": in_scores}
    for name in per_pixel:
        if name in IN_DISTRIBUTION:
            continue
        out_scores = scores[name] = all_scores(name)
        for score, values in out_scores.items():
            if not len(values):
                continue
            row = {
                "set": name,
                "score": score,
                "n_in": len(in_scores[score]),
                "n_out": len(values),
                **ood.detection_metrics(in_scores[score], values),
            }
            if bootstrap:
                low, high = ood.bootstrap_auroc(
                    in_scores[score], values, num_resamples=bootstrap, seed=seed
                )
                row["auroc_low"], row["auroc_high"] = low, high
            if score.startswith("typicality_"):
                threshold = tests[int(score.split("_")[1])].threshold
                row["threshold"] = threshold
                row["flagged_in"] = float(np.mean(in_scores[score] > threshold))
                row["flagged_out"] = float(np.mean(values > threshold))
            if name == "mnist" and _family(score) in published:
                row["published_auroc"] = published[_family(score)]
            rows.append(row)
    return {
        "rows": rows,
        "scores": scores,
        "combined_of": combined_of,
        "typicality": {
            str(n): {"train_mean": t.train_mean, "threshold": t.threshold} for n, t in tests.items()
        },
        "runs": runs,
        "splits": {"in_distribution": eval_split, "fit": fit_split},
        "sizes": {name: len(values["raw"]) for name, values in scores.items()},
        "mean_raw": {name: float(np.mean(values["raw"])) for name, values in scores.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per set, scores in rows."""
    lines = [
        "# Out-of-distribution detection",
        "",
        f"In-distribution: {report['sizes']['test']} images of the "
        f"`{report['splits']['in_distribution']}` split; typicality fitted on "
        f"`{report['splits']['fit']}`. Runs: "
        + "; ".join(
            f"{role} {r['workdir']} (step {r['step']})" for role, r in report["runs"].items()
        )
        + ".",
        "",
        "Mean raw bits/dim: "
        + ", ".join(f"{name} {value:.3f}" for name, value in report["mean_raw"].items())
        + ".",
        "",
        "AUROC, AUPRC (out-of-distribution positive), FPR at 95% / 80% TPR; higher score = "
        "more out-of-distribution. Typicality rows are over disjoint batches of n images.",
    ]
    by_set: dict[str, list] = {}
    for row in report["rows"]:
        by_set.setdefault(row["set"], []).append(row)
    for name, rows in by_set.items():
        lines += [
            "",
            f"## {name} ({rows[0]['n_out']} images)",
            "",
            "| score | AUROC (95% interval) | AUPRC | FPR@95% TPR | FPR@80% TPR "
            "| published AUROC |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            interval = (
                f" ({row['auroc_low']:.4f}-{row['auroc_high']:.4f})" if "auroc_low" in row else ""
            )
            lines.append(
                f"| {_title(row['score'])} | {row['auroc']:.4f}{interval} | {row['auprc']:.4f} | "
                f"{row['fpr_at_95_tpr']:.4f} | {row['fpr_at_80_tpr']:.4f} | "
                f"{row.get('published_auroc', '')} |"
            )
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], output: str) -> None:
    """report.json (everything but the per-image arrays) and report.md."""
    serialisable = {key: value for key, value in report.items() if key != "scores"}
    with open(os.path.join(output, "report.json"), "x") as f:
        json.dump(serialisable, f, indent=1)
    with open(os.path.join(output, "report.md"), "x") as f:
        f.write(markdown(report))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def draw(report, per_pixel, images, output: str, num_levels: int, examples: int = 2) -> None:
    """ROC curves and histograms per set, and per-pixel bit maps of a few images."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn import metrics as sk_metrics

    scores = report["scores"]
    for name, out_scores in scores.items():
        if name == "test":
            continue
        names = [s for s in out_scores if len(out_scores[s]) and len(scores["test"][s])]
        figure, axis = plt.subplots(figsize=(5.5, 5))
        for score in names:
            labels = np.r_[np.zeros(len(scores["test"][score])), np.ones(len(out_scores[score]))]
            fpr, tpr, _ = sk_metrics.roc_curve(
                labels, np.r_[scores["test"][score], out_scores[score]]
            )
            auroc = sk_metrics.auc(fpr, tpr)
            axis.plot(fpr, tpr, label=f"{_title(score)}: {auroc:.3f}")
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        axis.set(
            xlabel="false positive rate (in-distribution flagged)",
            ylabel="true positive rate",
            title=f"ROC: in-distribution vs {name}",
        )
        axis.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        figure.savefig(os.path.join(output, f"roc_{_slug(name)}.png"), dpi=110)
        plt.close(figure)

        columns = 4
        rows = -(-len(names) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.5 * rows))
        for axis, score in zip(np.ravel(axes), names, strict=False):
            both = np.r_[scores["test"][score], out_scores[score]]
            bins = np.linspace(np.quantile(both, 0.001), np.quantile(both, 0.999), 60)
            axis.hist(scores["test"][score], bins, alpha=0.6, density=True, label="in")
            axis.hist(out_scores[score], bins, alpha=0.6, density=True, label=name)
            axis.set_title(_title(score), fontsize=8)
            axis.tick_params(labelsize=7)
        for axis in np.ravel(axes)[len(names) :]:
            axis.axis("off")
        np.ravel(axes)[0].legend(fontsize=7)
        figure.suptitle(
            f"Scores: in-distribution vs {name} (bits/dim; the combined score in summed |z|)",
            fontsize=10,
        )
        figure.tight_layout()
        figure.savefig(os.path.join(output, f"hist_{_slug(name)}.png"), dpi=110)
        plt.close(figure)
    _draw_pixel_maps(per_pixel, images, output, num_levels, examples, plt)


def _draw_pixel_maps(per_pixel, images, output, num_levels, examples, plt) -> None:
    roles = [role for role in ("main", "background", "local") if role in per_pixel["test"]]
    columns = ["image"] + [f"{role} bits" for role in roles]
    columns += [f"main - {role}" for role in roles if role != "main"]
    picked = [
        (name, index)
        for name in per_pixel
        if name != "fit"
        for index in range(min(examples, len(images[name])))
    ]
    figure, axes = plt.subplots(
        len(picked), len(columns), figsize=(1.6 * len(columns), 1.6 * len(picked)), squeeze=False
    )
    for row, (name, index) in enumerate(picked):
        bits = {role: per_pixel[name][role][index].sum(axis=-1) for role in roles}
        panels = [
            (
                images[name][index][..., 0] if images[name].shape[-1] == 1 else images[name][index],
                "gray",
            )
        ]
        panels += [(bits[role], "magma") for role in roles]
        panels += [(bits["main"] - bits[role], "coolwarm") for role in roles if role != "main"]
        for column, (panel, cmap) in enumerate(panels):
            axis = axes[row, column]
            if cmap == "coolwarm":
                limit = float(np.max(np.abs(panel))) or 1.0
                shown = axis.imshow(panel, cmap=cmap, vmin=-limit, vmax=limit)
            elif cmap == "gray":
                shown = axis.imshow(panel, cmap=cmap, vmin=0, vmax=num_levels - 1)
            else:
                shown = axis.imshow(panel, cmap=cmap, vmin=0)
            if cmap != "gray":
                colorbar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
                colorbar.ax.tick_params(labelsize=5)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=7)
        axes[row, 0].set_ylabel(
            f"{name} #{index}\n{bits['main'].sum() / bits['main'].size:.2f} b/px", fontsize=7
        )
    figure.suptitle(
        "Bits per pixel under each model (the differences are the ratio scores)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(os.path.join(output, "pixel_maps.png"), dpi=110)
    plt.close(figure)
