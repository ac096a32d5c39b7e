"""What every entry point does with an exception: a message for the user's mistakes, a
traceback for ours.

`cli.run(main)` replaces `app.run(main)`. An error from `pixel_rnn_jax.errors` (unknown
config or dataset, dataset not prepared, no or no readable checkpoint, a batch that does not
split over the devices, distributed set-up, divergence, an unusable workdir, a full disk)
already says what went wrong and how to fix it: a traceback would only bury that line, so it
is printed alone on stderr and the command exits with status 1. Anything else is a bug and
propagates with its traceback.

It also gives every entry point the fast CPU allocator setting by default
(`allocator.ensure_huge_pages`: glibc's huge-page malloc, by re-executing once), and logs
once at start which setting is in effect.
"""

import functools
import sys
from collections.abc import Callable

from absl import app, logging

from experiments import allocator
from pixel_rnn_jax import errors

EXIT_USER_ERROR = 1  # a user-facing error; a traceback exits with Python's own status 1 too


def report_user_errors(main: Callable) -> Callable:
    """Wraps an absl `main(argv)` so that user-facing errors end it with message and status.

    Args:
      main: the entry point's main function.

    Returns:
      `main`, exiting with `EXIT_USER_ERROR` after printing `Error: <message>` to stderr
      when it raises a user-facing error (see `errors.user_message`).
    """

    @functools.wraps(main)
    def wrapped(argv):
        logging.info(allocator.describe())
        try:
            return main(argv)
        except Exception as error:
            message = errors.user_message(error)
            if message is None:
                raise
            print(f"Error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapped


def run(main: Callable):
    """`absl.app.run(main)` with the fast allocator and user errors reported without traceback.

    May re-execute the process first (`allocator.ensure_huge_pages`), before any flag is
    parsed; the re-executed process gets the same command line and runs `main` once.
    """
    allocator.ensure_huge_pages()
    app.run(report_user_errors(main))
