"""Checks that stop a run early with a clear message, and the SIGTERM handler.

Everything here raises (or records a request) before a bad state can be saved: a model that
does not fit the data, a workdir that is a URL or not shared by every process, NaN/inf after
an update; SIGTERM asks the loop to checkpoint at the next step boundary.
"""

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from pixel_rnn_jax import data, errors
from pixel_rnn_jax.errors import TrainingDivergedError


class StopRequest:
    """Set by the SIGTERM handler; read by the loop at step boundaries."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        del frame
        self.signum = signum
        logging.warning(
            "Received signal %d: will save a checkpoint after the current step and exit.", signum
        )


@contextlib.contextmanager
def handle_signal(signum: int, handler: Callable):
    """Installs `handler` for `signum` in the main thread, restoring the old one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        logging.warning("Not in the main thread: signal %d will not trigger a checkpoint.", signum)
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def check_model_matches_data(config: ml_collections.ConfigDict, spec: data.DatasetSpec):
    height, width, channels = spec.image_shape
    if config.model.num_channels != channels or config.model.num_levels != spec.num_levels:
        raise errors.ConfigError(
            f"Model expects {config.model.num_channels} channel(s) with "
            f"{config.model.num_levels} levels but dataset {spec.name!r} has {channels} "
            f"channel(s) with {spec.num_levels} levels. Set --config.model.num_channels="
            f"{channels} --config.model.num_levels={spec.num_levels}, or pick another dataset."
        )
    num_classes = config.model.num_classes
    if num_classes and not spec.num_classes:
        stand_in = f" (the stand-in for {spec.requested_name!r})" if spec.fallback_reason else ""
        raise errors.ConfigError(
            f"model.num_classes={num_classes}: a class-conditional model needs labelled data, "
            f"but dataset {spec.name!r}{stand_in} has no class labels in this project. Use a "
            f"labelled dataset ({', '.join(data.labelled_datasets())}), e.g. "
            "--config.data.name=mnist (real MNIST, binarized at load) or "
            "--config.data.name=embedded_binarized_mnist (offline), or set "
            "--config.model.num_classes=0 for an unconditional model."
        )
    if num_classes and num_classes != spec.num_classes:
        raise errors.ConfigError(
            f"model.num_classes={num_classes} but dataset {spec.name!r} has "
            f"{spec.num_classes} classes. Set --config.model.num_classes={spec.num_classes}."
        )


def check_finite(step: int, metrics: Mapping[str, float], last_good: int | None, ckpt_dir):
    """Raises TrainingDivergedError naming the step if the update produced NaN/inf."""
    bad = []
    if not math.isfinite(metrics["loss"]):
        bad.append(f"loss={metrics['loss']}")
    if not math.isfinite(metrics["grad_norm"]):
        bad.append(f"grad_norm={metrics['grad_norm']}")
    if not metrics["params_finite"]:
        bad.append("parameters contain NaN/inf after the update")
    if bad:
        where = (
            f"The last good checkpoint (step {last_good}) in {ckpt_dir} was not overwritten; "
            "rerunning resumes from it."
            if last_good is not None
            else "No checkpoint had been saved."
        )
        raise TrainingDivergedError(
            f"Training diverged at step {step}: {', '.join(bad)}. Nothing from step {step} was "
            f"saved. {where} Try a lower --config.train.learning_rate or "
            "--config.train.grad_clip_norm."
        )


def check_workdir_is_local_path(workdir: str):
    if "://" in str(workdir):
        raise errors.WorkdirError(
            f"--workdir={workdir}: the runner writes metrics.jsonl, TensorBoard files and "
            "images with local file APIs, so the workdir must be a filesystem path. For a "
            "multi-host run use a path that every host sees, e.g. a Cloud Storage bucket "
            "mounted with Cloud Storage FUSE at the same mount point on every host "
            "(gcsfuse --implicit-dirs BUCKET /mnt/BUCKET; --workdir=/mnt/BUCKET/run), or an "
            "NFS/Filestore share."
        )


SHARED_CHECK_FILE = ".pixel_rnn_shared_workdir_check"


def check_shared_workdir(workdir: str):
    """Fails on every process unless all processes see the same `workdir` (multi-process).

    Orbax writes each array once (from the process that owns it) and the metadata from
    process 0, and every process reads the whole checkpoint back, so a workdir on each host's
    local disk would save "successfully" and then fail to resume. Process 0 writes a random
    token; every process must read it back.
    """
    if jax.process_count() == 1:
        return
    token = np.frombuffer(os.urandom(16), np.uint32)
    token = "".join(f"{int(w):08x}" for w in multihost_utils.broadcast_one_to_all(token))
    path = os.path.join(workdir, SHARED_CHECK_FILE)
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            f.write(token)
        os.replace(path + ".tmp", path)
    multihost_utils.sync_global_devices("pixel_rnn_jax_shared_workdir_written")
    try:
        with open(path) as f:
            sees_it = f.read() == token
    except OSError:
        sees_it = False
    seen = np.ravel(multihost_utils.process_allgather(np.int32(sees_it)))
    if jax.process_index() == 0:
        os.remove(path)
    blind = [index for index, ok in enumerate(seen) if not ok]
    if blind:
        raise errors.WorkdirError(
            f"--workdir={workdir} is not shared: process(es) {blind} of {jax.process_count()} "
            "cannot see the file process 0 wrote there. Checkpoints of a multi-process run "
            "must live in one place that every host reads and writes at the same path (NFS, "
            "Filestore, or a Cloud Storage FUSE mount)."
        )


def preemption_notice_is_shared() -> bool:
    """Whether JAX's preemption service turns a SIGTERM on any process into a common step."""
    return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)
