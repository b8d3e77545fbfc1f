"""User-facing errors and the wrapper every command-line entry point runs under.

Bad input (a flag, a file, a line in a file) raises ``UserInputError``; ``run_cli`` turns it into one
clear ``error: ...`` line on stderr and exit status 2, with no traceback (other ``FatalRunError``s: their own
status). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence


class FatalRunError(Exception):
    """A run that cannot go on, for a reason one line can say (a lost peer, bad input): no traceback."""

    exit_code = 1


class UserInputError(FatalRunError):
    """Input the user can fix. ``where`` is a file, ``file:line`` or ``--flag``."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def input_error_at(path: str, line_no: int, message: str) -> UserInputError:
    return UserInputError(message, where=f"{path}:{line_no}")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main(argv)`` and exit: 0 on success, 2 on ``UserInputError``, 130 on Ctrl-C."""
    try:
        code = main(argv)
    except FatalRunError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
