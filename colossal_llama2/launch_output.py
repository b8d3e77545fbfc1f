"""What the launch wrapper lets through of the launchers' output, and the one line it ends a failed run with.

torchrun answers a failed worker with a ``ChildFailedError`` traceback of its own agent and a table of every
rank's exit code; ``colossalai run`` then prints the shell command it ran, ``export K="V" ...`` of every
environment variable included: tokens and keys end up in the logs people paste into bug reports. Both are
dropped here. The workers' own lines (the trainer's ``error: --flag: ...``, a worker's traceback) pass unchanged,
and the first of them is kept for the summary line.

Several hosts' output arrives interleaved, whole lines at a time: inside one host's traceback or failure table,
another process's log line, progress bar or ``error:`` line may appear. So a traceback ends only at a line shaped
like an exception (``pkg.SomeError: message``), a table only at its closing rule, and every other line met on
the way is another process's: it is shown, and the traceback or table goes on. Two torchruns' tracebacks may
interleave too; they are read as one.
"""
from __future__ import annotations

import re

ENV_DUMP = re.compile(r"export (?:\w+=\"[^\"]*\"\s*){2,}")
RANK_PREFIX = re.compile(r"^(?:\[(?:rank|default)\d+\]:? ?)?")  # torchrun's --tee prefixes
ELASTIC_FAILURE = "ChildFailedError"
# The last line of a Python traceback: an exception class (CamelCase, maybe dotted), then ":" and the message.
# colossalai run's report of a host whose command failed (click's "Error: failed to run ...", then invoke's "Exit
# code:", "Stdout:", "Stderr:") looks like one, and may come while another host's traceback is still arriving.
EXCEPTION_LINE = re.compile(r"^(?!Error: failed to run |Stdout: |Stderr: )(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?::|$)")
TRACEBACK_BODY = re.compile(r"^(?:[ \t]|$)")  # frames, source lines and carets are indented
# What torchrun's failure table is made of; any other line inside it came from another process.
TABLE_LINE = re.compile(r"^(?:=+|-+|\S.* FAILED|Failures:|Root Cause.*|\[\d+\]:|[ \t].*|)$")
TABLE_FIELD = re.compile(r"^  (time|host|rank|exitcode|error_file|traceback)\s*: ?(.*)$")
TABLE_RULE = "=" * 20


class LaunchOutput:
    """Feed it the launcher's output line by line; it returns the lines to show."""

    def __init__(self):
        self.first_error: str | None = None
        # Tracebacks being read, until their exception lines. Two hosts' torchruns fail at the same moment and
        # their tracebacks interleave line by line, so they share one buffer, closed when the last one ends.
        self._open_tracebacks = 0
        self._traceback_lines: list[str] = []
        self._worker_traceback = False  # one of them is a training process's: the buffer is shown
        self._rules_to_skip = 0  # inside torchrun's failure tables: their closing rules still to come
        self.failures: list[dict[str, str]] = []  # every rank of every host's table: time, host, rank, exitcode

    def feed(self, line: str) -> list[str]:
        text = RANK_PREFIX.sub("", line.rstrip("\n"))
        if ENV_DUMP.search(line):
            return ["[colossal_llama2.launch] (a launcher line that lists the whole environment is left out)\n"]
        if text.startswith("Traceback (most recent call last)"):
            self._open_tracebacks += 1
            self._traceback_lines.append(line)
            return []
        if ELASTIC_FAILURE in text and EXCEPTION_LINE.match(text):  # torchrun's traceback; its table follows
            self._rules_to_skip += 2
            return self._close_traceback()
        if self._rules_to_skip and TABLE_LINE.match(text) and not self._ambiguous(text):
            self._read_table(text)
            return []
        if self._open_tracebacks and TRACEBACK_BODY.match(text):
            self._traceback_lines.append(line)
            return []
        if self._open_tracebacks and EXCEPTION_LINE.match(text):
            self._traceback_lines.append(line)
            self._worker_traceback = True
            self._note_error(text)
            return self._close_traceback()
        return self._plain(line, text)

    def _ambiguous(self, text: str) -> bool:
        """An indented line while a table and a traceback are both open: a frame of the traceback, unless it is one
        of the table's fields."""
        return bool(self._open_tracebacks and TRACEBACK_BODY.match(text) and not TABLE_FIELD.match(text))

    def _close_traceback(self) -> list[str]:
        self._open_tracebacks = max(0, self._open_tracebacks - 1)
        if self._open_tracebacks:
            return []
        lines, shown = self._traceback_lines, self._worker_traceback
        self._traceback_lines, self._worker_traceback = [], False
        return lines if shown else []

    def _plain(self, line: str, text: str) -> list[str]:
        if text.startswith("error: "):
            self._note_error(text)
        return [line]

    def _read_table(self, text: str) -> None:
        """torchrun's failure table: one entry (time, host, rank, exitcode, traceback) per failed rank."""
        if text.startswith(TABLE_RULE):
            self._rules_to_skip -= 1
        elif field := TABLE_FIELD.match(text):
            key, value = field.groups()
            if key == "time" or not self.failures:
                self.failures.append({})
            self.failures[-1][key] = value.strip()

    def first_failure(self) -> str | None:
        """The rank that failed first over every host's table, when a signal ended it or it exited by itself."""
        causes = [c for c in self.failures if "rank" in c and "exitcode" in c]
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
        """At the end of the output: a traceback that never reached its exception line is shown as it is."""
        lines, self._traceback_lines, self._open_tracebacks = self._traceback_lines, [], 0
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
