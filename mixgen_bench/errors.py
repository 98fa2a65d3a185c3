"""Errors of the command-line tools: what the user gave is wrong, and one line says what.

Anything in ``mixgen_bench`` that finds a bad option, file or data set raises
:class:`UsageError`; each tool's ``main`` runs under :func:`usage_errors`, which turns it
into one line on stderr and exit status 2, as ``argparse`` does for a bad flag. Every
other exception is a bug or an accident and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UsageError(ValueError):
    """A bad option, file or data set, told in one line that names it."""


@contextlib.contextmanager
def usage_errors(prog: str) -> Iterator[None]:
    """Print ``PROG: error: MESSAGE`` and exit with status 2 on a :class:`UsageError`."""
    try:
        yield
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
