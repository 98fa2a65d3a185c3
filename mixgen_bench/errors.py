"""Errors of the command-line tools: what the user gave is wrong, and one line says what.

Anything in ``mixgen_bench`` that finds a bad option, file or data set raises
:class:`UsageError` (the checks shared with the trainer raise its ``InputError``, the
base class); each tool's ``main`` runs under :func:`usage_errors`, which turns it into
one line on stderr and exit status 2, as ``argparse`` does for a bad flag. Every other
exception is a bug or an accident and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from mixgen.open_clip_inputs import InputError


class UsageError(InputError):
    """A bad option, file or data set, told in one line that names it (an ``InputError``
    of the trainer, whose input checks the harness shares)."""


@contextlib.contextmanager
def usage_errors(prog: str) -> Iterator[None]:
    """Print ``PROG: error: MESSAGE`` and exit with status 2 on a :class:`UsageError` or
    the trainer's ``InputError``."""
    try:
        yield
    except InputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
