r"""Is this image from the training distribution? Likelihood-based out-of-distribution scores.

  python -m experiments.ood --config=diagonal_bilstm_fashion_mnist \
    --workdir=/root/runs/diagonal_bilstm_fashion_mnist_long --which=best \
    --background_config=diagonal_bilstm_fashion_mnist_background \
    --background_workdir=/root/runs/diagonal_bilstm_fashion_mnist_background \
    --local_config=pixelcnn_fashion_mnist_local \
    --local_workdir=/root/runs/pixelcnn_fashion_mnist_local \
    --out=mnist,noise,constant,inverted,vflip,hflip --output=/tmp/ood

In-distribution images are the config's reported split (all of it, or `--num`); the
out-of-distribution sets are `--out` (`pixel_rnn_jax.ood.SET_DESCRIPTIONS`, plus `png:DIR`, a
folder of PNGs of the model's size). Every score is computed on every set: raw bits/dim, the
likelihood ratio to `--background_*` (Ren et al. 2019), this project's ratio to
`--local_*`, input complexity under each classical lossless codec of the compression
benchmark (Serra et al. 2020), and typicality for batches of 1 and 5 (Nalisnick et al.
2019b), and this project's combination: a two-sided typicality test in score space, the sum
of every score's |z|, each standardised on the validation images. Anything fitted (the typicality
threshold and training mean, the standardisation) comes from the validation split and the
training split, never from an out-of-distribution image.

Writes OUTPUT/report.md and report.json (AUROC with a bootstrap interval, AUPRC, FPR at 95%
and 80% TPR, with the published numbers beside them) and pictures: ROC curves and score
histograms per set, and per-pixel bit maps of a few images. Bad input (no checkpoint, models
of different image shapes, an unknown set, an unusable PNG folder, `--num` beyond a set) is
a one-line error before anything is written.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import cli, configs

_CONFIG = configs.define_config_flag("config")
_BACKGROUND_CONFIG = configs.define_config_flag(
    "background_config", help_string="Config of the background model (likelihood ratio)."
)
_LOCAL_CONFIG = configs.define_config_flag(
    "local_config", help_string="Config of the local model (this project's score)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The main model's run directory.")
_BACKGROUND_WORKDIR = flags.DEFINE_string("background_workdir", None, "Background model's run.")
_LOCAL_WORKDIR = flags.DEFINE_string("local_workdir", None, "Local model's run.")
_WHICH = flags.DEFINE_enum("which", "best", ["latest", "best"], "Checkpoint of every model.")
_OUT = flags.DEFINE_list(
    "out",
    ["mnist", "noise", "constant", "inverted", "vflip", "hflip"],
    "Out-of-distribution sets: mnist, noise, constant, inverted, vflip, hflip, png:DIR.",
)
_NUM = flags.DEFINE_integer(
    "num", None, "Images of the in-distribution split and of each set (default: all of each)."
)
_FIT_SPLIT = flags.DEFINE_string(
    "fit_split", None, "Held-out in-distribution split to fit on (default: the validation one)."
)
_FIT_NUM = flags.DEFINE_integer("fit_num", 5_000, "Images of the fit split and training mean.")
_CODECS = flags.DEFINE_list(
    "codecs", None, "Codecs for input complexity (default: every codec of the compression suite)."
)
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 200, "Resamples of the AUROC interval.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random sets and bootstraps.")
_OUTPUT = flags.DEFINE_string("output", None, "Report directory (must not hold a report).")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Keep each model's per-pixel bits and the codec sizes here for reruns."
)
flags.mark_flags_as_required(["config", "output"])
flags.declare_key_flag("config")

# Published Fashion-MNIST -> MNIST AUROCs (../shared/REFERENCE.md), by score family.
PUBLISHED_MNIST_AUROC = {
    "raw": "0.076-0.105 PixelCNN++, 0.12-0.20 Glow (Bergamin et al. 2022)",
    "background_ratio": "0.994 PixelCNN++, (mu, lambda) tuned on NotMNIST (Ren et al. 2019)",
    "complexity": "0.967 PixelCNN++, 0.998 Glow (Serra et al. 2020, via Havtorn et al. 2021)",
    "typicality_1": "0.76-0.83 PixelCNN++ (Bergamin et al. 2022)",
    "typicality_5": "0.91-0.95 for pairs, PixelCNN++ (Bergamin et al. 2022)",
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from experiments import ood_inputs, ood_report
    from pixel_rnn_jax import errors, metric_logging, ood

    metric_logging.quiet_library_info_logs()
    runs = {"main": (_CONFIG.value, _WORKDIR.value or configs.flag_run_dirs(None)[1])}
    for role, config_flag, workdir_flag in (
        ("background", _BACKGROUND_CONFIG, _BACKGROUND_WORKDIR),
        ("local", _LOCAL_CONFIG, _LOCAL_WORKDIR),
    ):
        if (config_flag.value is None) != (workdir_flag.value is None):
            raise errors.ConfigError(
                f"--{role}_config and --{role}_workdir go together: give both or neither."
            )
        if config_flag.value is not None:
            runs[role] = (config_flag.value, workdir_flag.value)
    inputs = ood_inputs.resolve(
        runs,
        which=_WHICH.value,
        out=_OUT.value,
        output=_OUTPUT.value,
        num=_NUM.value,
        fit_split=_FIT_SPLIT.value,
        fit_num=_FIT_NUM.value,
        codecs=_CODECS.value,
        seed=_SEED.value,
    )
    cache, levels = _CACHE_DIR.value, inputs.spec.num_levels
    bits = {
        role: ood_inputs.ModelBits(model, inputs.workdirs[role], cache)
        for role, model in inputs.models.items()
    }
    images = {"test": inputs.test_images, "fit": inputs.fit_images, **inputs.out_images}
    per_pixel = {
        name: {role: model_bits(name, pictures) for role, model_bits in bits.items()}
        for name, pictures in images.items()
    }
    report = ood_report.build(
        per_pixel,
        {
            name: ood_inputs.codec_bits(x, levels, inputs.codecs, cache)
            for name, x in images.items()
        },
        train_raw=ood.raw_score(bits["main"]("train", inputs.train_images)),
        bootstrap=_BOOTSTRAP.value,
        seed=_SEED.value,
        published=PUBLISHED_MNIST_AUROC,
        runs={
            role: {"workdir": inputs.workdirs[role], "step": model.step}
            for role, model in inputs.models.items()
        },
        fit_split=inputs.fit_split,
        eval_split=inputs.spec.eval_split,
    )
    os.makedirs(_OUTPUT.value, exist_ok=True)
    ood_report.write(report, _OUTPUT.value)
    ood_report.draw(report, per_pixel, images, _OUTPUT.value, levels)
    print(ood_report.markdown(report))
    print(f"Wrote {_OUTPUT.value}/report.md, report.json and the pictures.")


if __name__ == "__main__":
    cli.run(main)
