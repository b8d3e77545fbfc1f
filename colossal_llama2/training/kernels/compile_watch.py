"""--compile: say so when torch.compile gives up on code and leaves it in eager mode.

dynamo recompiles one function at most ``recompile_limit`` times (8) and then runs it eagerly, with nothing
but a warning buried in the worker logs. The numbers stay the same but the speed drops: with the KV cache on,
every decoder layer past the 8th ran eagerly, and fp8's casts fell from 1.15x to 0.71x.
This checks dynamo's counters after each step and logs once, with the step, if that has happened.
"""
from __future__ import annotations

from ...utils.logging import get_logger

logger = get_logger(__name__)


def recompile_limit_hits() -> int:
    """How many times dynamo has given up on a function because of its recompile limit, in this process."""
    from torch._dynamo.utils import counters

    return sum(n for reason, n in counters["unimplemented"].items() if "recompile limit" in reason.lower())


class CompileWatch:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.warned = False

    def after_step(self, step: int) -> None:
        if not self.enabled or self.warned:
            return
        hits = recompile_limit_hits()
        if hits:
            self.warned = True
            logger.warning("--compile: torch.compile reached its recompile limit (%d time(s)) by step %d; the code "
                           "it gave up on runs in eager mode from now on (same numbers, slower). TORCH_LOGS=recompiles "
                           "shows what changed between the compilations.", hits, step)
