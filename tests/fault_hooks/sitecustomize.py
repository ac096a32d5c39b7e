"""Test-only: SIGKILLs this process at a chosen moment of a checkpoint save.

tests/test_fault_matrix.py starts `python -m experiments.train` with this folder on
PYTHONPATH, so Python imports this file at start-up as `sitecustomize`. It does nothing
unless PIXEL_RNN_TEST_KILL=<moment>:<step> is set. The kill is a real SIGKILL of the
training process, at a point chosen in Orbax's own save path:
  before  Orbax's `CheckpointManager.save` is called for <step>: nothing of it is written.
  during  Orbax's background thread writes <step>'s `data` item: the state arrays may be
          half written and the folder still has its temporary (uncommitted) name.
  after   Orbax has just renamed <step>'s folder to its final name: the checkpoint is
          committed, and the process dies before anything else happens.
PIXEL_RNN_TEST_SLOW_SAVE=<seconds> instead makes every background write of a `data` item
take that much longer (a slow disk), to hold a save open while a test sends signals.
"""

import asyncio
import os
import signal

_SPEC = os.environ.get("PIXEL_RNN_TEST_KILL")
_SLOW = os.environ.get("PIXEL_RNN_TEST_SLOW_SAVE")


def _die(moment: str, step: int):
    print(f"fault_hooks: SIGKILL {moment} the save of step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _install(moment: str, step: int):
    import orbax.checkpoint as ocp  # noqa: PLC0415 - only in the faulted child process
    from etils import epath  # noqa: PLC0415
    from orbax.checkpoint._src.handlers import json_checkpoint_handler  # noqa: PLC0415
    from orbax.checkpoint._src.path import async_path  # noqa: PLC0415

    if moment == "before":
        original_save = ocp.CheckpointManager.save

        def save(self, at, *args, **kwargs):
            if at == step:
                _die(moment, step)
            return original_save(self, at, *args, **kwargs)

        ocp.CheckpointManager.save = save
    elif moment == "during":
        original_save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

        async def _save_fn(self, item, directory):
            folder = epath.Path(directory)
            if folder.name.startswith("data") and folder.parent.name.startswith(f"{step}."):
                _die(moment, step)
            return await original_save_fn(self, item, directory)

        json_checkpoint_handler.JsonCheckpointHandler._save_fn = _save_fn
    elif moment == "after":
        original_rename = async_path.rename

        async def rename(source, target):
            result = await original_rename(source, target)
            if epath.Path(target).name == str(step):
                _die(moment, step)
            return result

        async_path.rename = rename
    else:
        raise ValueError(f"PIXEL_RNN_TEST_KILL={_SPEC!r}: unknown moment {moment!r}")


def _slow_down(seconds: float):
    from etils import epath  # noqa: PLC0415 - only in the slowed child process
    from orbax.checkpoint._src.handlers import json_checkpoint_handler  # noqa: PLC0415

    original_save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def _save_fn(self, item, directory):
        if epath.Path(directory).name.startswith("data"):
            await asyncio.sleep(seconds)
        return await original_save_fn(self, item, directory)

    json_checkpoint_handler.JsonCheckpointHandler._save_fn = _save_fn


if _SPEC:
    _moment, _step = _SPEC.split(":")
    _install(_moment, int(_step))
if _SLOW:
    _slow_down(float(_SLOW))
