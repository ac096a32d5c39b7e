"""Checks of a run's workdir that must pass before anything is trained or written.

A training run that cannot write its checkpoints finds out only at the first save, after
minutes or hours of work; one started in another model's workdir cannot restore any
checkpoint there and would report them all as unreadable. Both are set-up mistakes that
are cheap to detect up front, with a message that says what to do (`WorkdirError`).
"""

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from pixel_rnn_jax import checkpoints, metric_logging, model_fields
from pixel_rnn_jax.errors import WorkdirError, is_disk_full

# The runner writes a few kB; a larger file is not one it wrote and is not read.
MAX_CONFIG_BYTES = 1 << 20
CONFIG_FILE = "config.json"  # written by the runner: the config and environment of the run
# Folders inside the workdir that a training run writes into, when they already exist.
_WRITTEN_SUBDIRS = (
    checkpoints.CHECKPOINT_SUBDIR,
    checkpoints.QUARANTINE_SUBDIR,
    metric_logging.TENSORBOARD_DIR,
    metric_logging.IMAGES_DIR,
)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict:
    """Model fields whose values differ between a workdir's config.json and a config.

    Args:
      recorded: `config.json`'s `config.model` (JSON).
      current: `config.model.to_dict()` of the run being started.

    Returns:
      {dotted field: (recorded value, current value)} for every field that shapes the
      parameters: all but `model_fields.PARAMETER_NEUTRAL_MODEL_FIELDS` (a checkpoint
      restores under any `schedule`, `unroll`, `remat` or `dtype`), and `multiscale.*` only
      when either model is the multi-scale one; fields
      present on one side only count as differences (recorded as None).
    """
    # Compare JSON to JSON: config.json was written with json.dump(default=str).
    current = json.loads(json.dumps(current, default=str))
    old, new = _flatten(recorded), _flatten(current)
    multiscale = model_fields.reads_multiscale_fields(
        recorded
    ) or model_fields.reads_multiscale_fields(current)
    differences = {}
    for key in sorted(set(old) | set(new)):
        top = key.split(".")[0]
        if top in model_fields.PARAMETER_NEUTRAL_MODEL_FIELDS or (
            top == model_fields.MULTISCALE_FIELD and not multiscale
        ):
            continue
        if old.get(key) != new.get(key):
            differences[key] = (old.get(key), new.get(key))
    return differences


def read_config_json(path: str) -> Any:
    """A workdir's config.json parsed, reading no more than `MAX_CONFIG_BYTES`.

    Raises:
      OSError: unreadable. ValueError: over `MAX_CONFIG_BYTES`, not UTF-8 or not JSON.
      RecursionError: nested deeper than the parser's stack.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"more than {MAX_CONFIG_BYTES} bytes")
    return json.loads(data.decode("utf-8"))


def check_config_matches(workdir: str, config: ml_collections.ConfigDict):
    """Raises WorkdirError if the workdir's config.json names a different model.

    An unreadable config.json is only reported: it describes the run, the checkpoints hold
    it, and a training run rewrites the file.

    Args:
      workdir: the run's work directory (need not exist).
      config: the config of the run being started (or evaluated).

    Raises:
      WorkdirError: `config.json` records other values for parameter-shaping model fields.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        recorded = read_config_json(path)["config"]["model"]
        if not isinstance(recorded, Mapping):
            raise TypeError(f"config.model is a {type(recorded).__name__}")
        differences = model_differences(recorded, config.model.to_dict())
    # RecursionError: JSON nested deeper than the interpreter's stack.
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        logging.warning(
            "%s is unreadable (%s: %s); it only describes the run, so it is not checked "
            "against the config (training rewrites it).",
            path,
            type(error).__name__,
            str(error)[:200],
        )
        return
    if differences:
        listed = "; ".join(
            f"model.{key}: {old!r} there, {new!r} here" for key, (old, new) in differences.items()
        )
        flags = " ".join(
            f"--config.model.{key}={old}"
            for key, (old, _) in differences.items()
            if old is not None
        )
        raise WorkdirError(
            f"--workdir={workdir} holds a run of a different model ({path}: {listed}). Its "
            "checkpoints hold that model's parameters, which this config cannot resume or "
            f"evaluate. Use a new --workdir for this model, or pass the workdir's settings: "
            f"{flags}"
        )


def _check_can_write_in(directory: str, workdir: str):
    """Creates and removes a probe file in `directory`; WorkdirError if the OS refuses."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".pixel_rnn_write_check_", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        if is_disk_full(error):
            problem = "the disk is full"
        else:
            problem = f"it is not writable ({error.strerror or error})"
        raise WorkdirError(
            f"--workdir={workdir}: cannot write in {directory}: {problem}. Training writes "
            "checkpoints, metrics and config.json there, so it stopped before starting. Use "
            "a writable --workdir (copy this one to keep resuming its run). Evaluation only "
            "reads a workdir: python -m experiments.evaluate works on this one as it is."
        ) from error


def check_writable(workdir: str):
    """Creates the workdir if needed and checks that a run can write in it and its folders.

    Uses real probe files rather than `os.access`, which says yes to root on a read-only
    filesystem and knows nothing of full disks or immutable folders.

    Args:
      workdir: the run's work directory.

    Raises:
      WorkdirError: the workdir (or a folder in it that training writes to) cannot be
        created or written.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise WorkdirError(
            f"--workdir={workdir} cannot be created ({error.strerror or error}). Use a "
            "--workdir in a folder you can write to."
        ) from error
    _check_can_write_in(workdir, workdir)
    for name in _WRITTEN_SUBDIRS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            _check_can_write_in(path, workdir)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict):
    """Everything to check about a training run's workdir, before any training or writing.

    Args:
      workdir: the run's work directory (created here if missing).
      config: the run's config.

    Raises:
      WorkdirError: another model's run, or not writable.
    """
    check_config_matches(workdir, config)
    check_writable(workdir)
