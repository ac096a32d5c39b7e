"""The project's user-facing errors: what the entry points print without a traceback.

Every error here means "the set-up is wrong, and the message says how to fix it" (an unknown
config, a dataset that is not prepared, a workdir that cannot be used, checkpoints that cannot
be restored, a full disk, a diverged run). The entry points (`experiments/cli.py`) print
`user_message(error)` and exit with status 1; any other exception is a bug and keeps its
traceback. Each class also derives from the built-in type it replaced (ValueError,
RuntimeError, ...), so code and tests that caught the old type keep working.

This module imports nothing from the package, so any module (and the entry points, before
JAX is imported) can use it.
"""

import errno

# errno values that mean "the disk (or the user's quota) is full".
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# TensorStore reports write failures as ValueError/RuntimeError carrying the OS message.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


class UserError(Exception):
    """An error the user fixes from its message alone: printed without a traceback."""


class ConfigError(UserError, ValueError):
    """The config (or a flag) is invalid: unknown name or field, inconsistent values."""


class DatasetNotPreparedError(UserError, ValueError):
    """The requested dataset is not prepared (in a readable format) on disk."""


class DistributedSetupError(UserError, RuntimeError):
    """A multi-process run cannot start: settings are missing or the coordinator is unreachable."""


class WorkdirError(UserError, ValueError):
    """The workdir cannot be used: a URL, read-only, not shared, or another model's run."""


class CheckpointError(UserError, RuntimeError):
    """Checkpoints cannot be restored (none of them reads back) or written."""


class NoCheckpointError(UserError, FileNotFoundError):
    """Evaluation or sampling was asked for a run that has no checkpoint yet."""


class DiskFullError(CheckpointError):
    """A checkpoint could not be written because the disk (or quota) is full."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss or the parameters became NaN/inf."""


class CompressedFileError(UserError, ValueError):
    """A .prnn file cannot be decoded: not one, truncated, damaged, or another model's."""


class ImageFileError(UserError, ValueError):
    """An input image does not fit the model: unreadable, or the wrong shape or levels."""


class OutputExistsError(UserError, FileExistsError):
    """Writing would replace existing files, and overwriting was not asked for."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an exception it was raised from, means "no space left on device".

    Orbax re-raises a failed background write from `wait_until_finished` (sometimes wrapped,
    and TensorStore turns OS errors into ValueError text), so the chain and the message are
    both searched.

    Args:
      error: any exception.

    Returns:
      True for ENOSPC/EDQUOT anywhere in the `__cause__`/`__context__` chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def user_message(error: BaseException) -> str | None:
    """The message an entry point prints for `error`, or None when it is a bug (traceback).

    Args:
      error: the exception that ended the command.

    Returns:
      The text for stderr, or None if the exception is not a user-facing error.
    """
    if isinstance(error, UserError):
        return str(error)
    if is_disk_full(error):
        where = getattr(error, "filename", None)
        return (
            f"No space left on device{f' writing {where}' if where else ''} ({error}). Free "
            "some space and rerun the same command: it resumes from the newest checkpoint."
        )
    return None
