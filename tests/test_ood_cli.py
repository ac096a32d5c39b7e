"""`python -m experiments.ood` end to end on a smoke run, and every refused input."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import configs, ood_inputs
from pixel_rnn_jax import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "pixelcnn_fashion_mnist_local_smoke"  # 28x28, 256 levels: MNIST's shape


@pytest.fixture(scope="module")
def run(smoke_run):
    """A 2-step smoke run (on the embedded 256-level digits) and its config."""
    return smoke_run(CONFIG)


def _pngs(directory, shapes):
    os.makedirs(directory, exist_ok=True)
    for index, shape in enumerate(shapes):
        pixels = np.random.default_rng(index).integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(directory, f"image{index}.png"))
    return str(directory)


def test_report_tables_and_pictures_with_a_png_folder(run, tmp_path):
    workdir, _, cache = run
    output, pngs = tmp_path / "report", _pngs(tmp_path / "pngs", [(28, 28)] * 6)
    command = [
        sys.executable, "-m", "experiments.ood", f"--config={CONFIG}", f"--workdir={workdir}",
        "--which=latest", f"--background_config={CONFIG}", f"--background_workdir={workdir}",
        f"--local_config={CONFIG}", f"--local_workdir={workdir}",
        f"--out=mnist,inverted,png:{pngs}", "--num=6", "--fit_split=train", "--fit_num=12",
        "--codecs=PNG,JPEG-LS", "--bootstrap=10", f"--output={output}",
    ]  # fmt: skip
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text())
    scores = [
        "raw", "background_ratio", "local_ratio", "complexity:PNG", "complexity:JPEG-LS",
        "typicality_1", "typicality_5", "combined",
    ]  # fmt: skip
    for name in ("mnist", "inverted", f"png:{pngs}"):
        rows = {row["score"]: row for row in report["rows"] if row["set"] == name}
        assert sorted(rows) == sorted(scores)
        # The reference models are the main model itself: every ratio is exactly 0.
        assert rows["background_ratio"]["auroc"] == rows["local_ratio"]["auroc"] == 0.5
        assert rows["raw"]["n_in"] == rows["raw"]["n_out"] == 6
        assert rows["typicality_5"]["n_in"] == rows["typicality_5"]["n_out"] == 1
        for row in rows.values():
            assert 0.0 <= row["auroc_low"] <= row["auroc"] <= row["auroc_high"] <= 1.0
    assert (
        "0.994"
        in next(r for r in report["rows"] if r["score"] == "background_ratio")["published_auroc"]
    )
    markdown = (output / "report.md").read_text()
    assert "## mnist (6 images)" in markdown and "| likelihood ratio (background) |" in markdown
    pictures = {path.name for path in output.glob("*.png")}
    assert {"roc_mnist.png", "hist_inverted.png", "pixel_maps.png"} <= pictures
    assert f"roc_png_{pngs.replace('/', '_').lstrip('_')}.png" in pictures or len(pictures) == 7


def test_a_refusal_is_one_line_with_status_1_and_writes_nothing(run, tmp_path):
    workdir, _, cache = run
    output = tmp_path / "report"
    command = [
        sys.executable, "-m", "experiments.ood", f"--config={CONFIG}", f"--workdir={workdir}",
        "--out=mnist,svhn", f"--output={output}",
    ]  # fmt: skip
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --out: unknown set 'svhn'")
    assert not output.exists()


def _resolve(run, tmp_path, **overrides):
    workdir, config, _ = run
    arguments = {
        "runs": {"main": (config, workdir)},
        "which": "latest",
        "out": ["mnist"],
        "output": str(tmp_path / "report"),
        "num": 4,
        "fit_split": "train",
        "fit_num": 4,
    }
    arguments.update(overrides)
    return ood_inputs.resolve(**arguments)


def test_resolve_builds_the_sets(run, tmp_path):
    inputs = _resolve(run, tmp_path, out=["mnist", "hflip"])
    assert inputs.test_images.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(inputs.out_images["hflip"], inputs.test_images[:, :, ::-1])
    assert inputs.out_images["mnist"].shape == (4, 28, 28, 1)
    assert inputs.fit_split == "train" and len(inputs.fit_images) == 4


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("unknown set", errors.ConfigError, r"unknown set 'svhn'; the known sets: mn.*DIR"),
        ("num beyond the test split", errors.ConfigError, r"test split, which has 1000"),
        ("num beyond a png folder", errors.ConfigError, r"'png:.*', which has 2"),
        ("empty png folder", errors.ImageFileError, r"is empty"),
        ("not an image", errors.ImageFileError, r"notes.txt: not a readable PNG image"),
        ("png of another size", errors.ImageFileError, r"image0.png is 20x28"),
        ("png of another channel count", errors.ImageFileError, r"image0.png is a 'RGB' image"),
        ("no checkpoint", errors.NoCheckpointError, r"No checkpoint"),
        ("background of another shape", errors.ConfigError, r"background .* \(32, 32, 3\)"),
        ("no validation split", errors.ConfigError, r"no validation split to fit on"),
        ("report exists", errors.OutputExistsError, r"already holds a report"),
    ],
)  # fmt: skip
def test_bad_inputs_are_refused_before_anything_is_written(run, tmp_path, case, error, message):
    workdir, config, _ = run
    overrides = {}
    if case == "unknown set":
        overrides["out"] = ["mnist", "svhn"]
    elif case == "num beyond the test split":
        overrides["num"] = 5000
    elif case == "num beyond a png folder":
        overrides["out"] = [f"png:{_pngs(tmp_path / 'few', [(28, 28)] * 2)}"]
    elif case == "empty png folder":
        os.makedirs(tmp_path / "empty")
        overrides["out"] = [f"png:{tmp_path / 'empty'}"]
    elif case == "not an image":
        folder = _pngs(tmp_path / "mixed", [(28, 28)])
        pathlib.Path(folder, "notes.txt").write_text("not a picture")
        overrides["out"] = [f"png:{folder}"]
    elif case == "png of another size":
        overrides["out"] = [f"png:{_pngs(tmp_path / 'small', [(20, 28)])}"]
    elif case == "png of another channel count":
        overrides["out"] = [f"png:{_pngs(tmp_path / 'rgb', [(28, 28, 3)])}"]
    elif case == "no checkpoint":
        overrides["runs"] = {"main": (config, str(tmp_path / "empty_run"))}
    elif case == "background of another shape":
        rgb = configs.get_config("pixelcnn_cifar10_smoke")
        overrides["runs"] = {"main": (config, workdir), "background": (rgb, workdir)}
    elif case == "no validation split":
        overrides["fit_split"] = None
    elif case == "report exists":
        os.makedirs(tmp_path / "report")
        (tmp_path / "report" / "report.json").write_text("{}")
    with pytest.raises(error, match=message):
        _resolve(run, tmp_path, **overrides)
    if case != "report exists":
        assert not (tmp_path / "report").exists()
