"""What the launch wrapper lets through of the launchers' output, and the one line it ends a failed run with.

torchrun answers a failed worker with a ``ChildFailedError`` traceback of its own agent and a table of every
rank's exit code; ``colossalai run`` then prints the shell command it ran, ``export K="V" ...`` of every
environment variable included: tokens and keys end up in the logs people paste into bug reports. Both are
dropped here. The workers' own lines (the trainer's ``error: --flag: ...``, a worker's traceback) pass unchanged,
and the first of them is kept for the summary line.
"""
from __future__ import annotations

import re

ENV_DUMP = re.compile(r"export (?:\w+=\"[^\"]*\"\s*){2,}")
RANK_PREFIX = re.compile(r"^(?:\[(?:rank|default)\d+\]:? ?)?")  # torchrun's --tee prefixes
ELASTIC_FAILURE = "ChildFailedError"
TABLE_RULE = "=" * 20


class LaunchOutput:
    """Feed it the launcher's output line by line; it returns the lines to show."""

    def __init__(self):
        self.first_error: str | None = None
        self._traceback: list[str] | None = None  # a traceback being read, until its exception line
        self._rules_to_skip = 0  # inside torchrun's failure table: its closing rules still to come
        self.dropped_environment = False

    def feed(self, line: str) -> list[str]:
        text = RANK_PREFIX.sub("", line.rstrip("\n"))
        if self._rules_to_skip:
            if text.startswith(TABLE_RULE):
                self._rules_to_skip -= 1
            return []
        if ENV_DUMP.search(line):
            self.dropped_environment = True
            return ["[colossal_llama2.launch] (a launcher line that lists the whole environment is left out)\n"]
        if self._traceback is not None:
            self._traceback.append(line)
            if text.startswith((" ", "\t")) or not text.strip():
                return []
            lines, self._traceback = self._traceback, None
            if ELASTIC_FAILURE in text:  # torchrun's own traceback, then its table between two rules
                self._rules_to_skip = 2
                return []
            self._note_error(text)
            return lines
        if text.startswith("Traceback (most recent call last)"):
            self._traceback = [line]
            return []
        if text.startswith("error: "):
            self._note_error(text)
        return [line]

    def flush(self) -> list[str]:
        lines, self._traceback = self._traceback or [], None
        return lines

    def _note_error(self, text: str) -> None:
        if self.first_error is None:
            self.first_error = text.strip()

    def summary(self, code: int) -> str:
        cause = self.first_error or "no error line from the training processes; see the output above"
        return f"[colossal_llama2.launch] the run failed (exit status {code}): {cause}"
