"""What the tokenizer stage did, as the lines it prints (one report for every tokenizer kind)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ExtensionReport:
    source_size: int = 0
    final_size: int = 0
    added_from_file: int = 0
    added_from_corpus: int = 0
    added_support: int = 0  # characters and intermediate merges that make a requested piece reachable
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    dropped_unreachable: list[str] = field(default_factory=list)  # never produced: left out, and why
    unreachable: list[str] = field(default_factory=list)  # in the written model (empty unless a bug)
    compression: list[tuple[str, float, float]] = field(default_factory=list)  # (text, before, after)

    def lines(self) -> list[str]:
        out = [f"source vocabulary:          {self.source_size}",
               f"added from --expand_tokens_file: {self.added_from_file}",
               f"added from --train_corpus:  {self.added_from_corpus}",
               f"added as characters/intermediate merges (so BPE can produce the pieces above): {self.added_support}"]
        for reason, count in sorted(self.skipped.items()):
            out.append(f"skipped ({reason}): {count}")
        if self.dropped_unreachable:
            out.append(f"left out, never produced by the encoders even alone: {len(self.dropped_unreachable)}, "
                       f"e.g. {self.dropped_unreachable[:5]}")
        out.append(f"final vocabulary:           {self.final_size}")
        for name, before, after in self.compression:
            out.append(f"tokens per character on {name}: {before:.3f} before, {after:.3f} after "
                       f"({after / before:.2f}x)")
        if self.unreachable:
            out.append(f"WARNING: {len(self.unreachable)} new pieces are never produced by the encoder on their own "
                       f"text, e.g. {self.unreachable[:5]}")
        return out
