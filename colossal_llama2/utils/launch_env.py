"""An environment that `colossalai run` can pass on.

`colossalai run` re-exports every environment variable into a shell command as ``export K="V"`` without
escaping, so a value holding ``$``, a double quote or a backtick breaks the launch (``bad substitution``).
make exports such a value itself (``MAKEOVERRIDES="${-*-command-variables-*-}"``) whenever it is called
with a variable on its command line, as in ``make demo DEMO_DIR=...``. These variables mean nothing to
training, so launches that we start drop them.
"""
from __future__ import annotations

import os

MAKE_VARIABLES = ("MAKEFLAGS", "MAKEOVERRIDES", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR")
UNQUOTABLE = ('"', "$", "`", "\\")


def colossalai_run_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: os.environ) without make's variables and values `colossalai run` cannot quote."""
    env = dict(os.environ if env is None else env)
    return {k: v for k, v in env.items()
            if k not in MAKE_VARIABLES and not any(c in v for c in UNQUOTABLE)}
