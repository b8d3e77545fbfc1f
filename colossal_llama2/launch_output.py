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
# Several hosts' output arrives interleaved: inside one host's traceback, another process's line may appear. torch's
# own log lines (glog style, "W1205 13:26:08.978000 22850 api.py:1028] ...") and a worker's "error: " line are never
# a traceback's exception line, so they pass through and the traceback goes on.
FOREIGN_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ |error: )")
TABLE_RULE = "=" * 20


class LaunchOutput:
    """Feed it the launcher's output line by line; it returns the lines to show."""

    def __init__(self):
        self.first_error: str | None = None
        self._traceback: list[str] | None = None  # a traceback being read, until its exception line
        self._rules_to_skip = 0  # inside torchrun's failure table: its closing rules still to come
        self._in_root_cause = False
        self.root_causes: list[dict[str, str]] = []  # each host's torchrun: the rank that failed first there

    def feed(self, line: str) -> list[str]:
        text = RANK_PREFIX.sub("", line.rstrip("\n"))
        if self._rules_to_skip:
            if FOREIGN_LINE.match(text):
                return self._plain(line, text)
            self._read_table(text)
            return []
        if ENV_DUMP.search(line):
            return ["[colossal_llama2.launch] (a launcher line that lists the whole environment is left out)\n"]
        if self._traceback is not None:
            if FOREIGN_LINE.match(text):
                return self._plain(line, text)
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
        return self._plain(line, text)

    def _plain(self, line: str, text: str) -> list[str]:
        if text.startswith("error: "):
            self._note_error(text)
        return [line]

    def _read_table(self, text: str) -> None:
        """torchrun's failure table: keep its "Root Cause" entry (time, host, rank, exitcode, traceback)."""
        if text.startswith(TABLE_RULE):
            self._rules_to_skip -= 1
            self._in_root_cause = False
        elif text.startswith("Root Cause"):
            self._in_root_cause = True
            self.root_causes.append({})
        elif self._in_root_cause and ":" in text and text.startswith("  "):
            key, _, value = text.strip().partition(":")
            self.root_causes[-1][key.strip()] = value.strip()

    def first_failure(self) -> str | None:
        """The rank that failed first over every host's table, when a signal ended it or it exited by itself."""
        causes = [c for c in self.root_causes if "rank" in c and "exitcode" in c]
        if not causes:
            return None
        # Ranks ended by SIGTERM were stopped by their own torchrun after another failure: the others come first.
        # torchrun stamps failures to the second, so a rank killed by a signal ties with the peers that saw its
        # connections close and exited; within a second the signal is the cause.
        cause = min(causes, key=lambda c: ("SIGTERM" in c["exitcode"], c.get("time", ""),
                                           not c["exitcode"].split()[0].startswith("-")))
        rank = cause["rank"].split()[0]
        code = cause["exitcode"].split()[0]
        how = (cause.get("traceback") or f"exit status {code}") if code.startswith("-") else f"exit status {code}"
        return f"rank {rank} (host {cause.get('host', '?')}) failed first: {how}"

    def flush(self) -> list[str]:
        lines, self._traceback = self._traceback or [], None
        return lines

    def _note_error(self, text: str) -> None:
        if self.first_error is None:
            self.first_error = text.strip()

    def summary(self, code: int) -> str:
        first = self.first_failure()
        killed = first and "Signal" in first  # a rank that died of a signal: that is the story, not its peers' errors
        cause = first if killed else (self.first_error or first or
                                      "no error line from the training processes; see the output above")
        return f"[colossal_llama2.launch] the run failed (exit status {code}): {cause}"
