"""Compare tokenizers on a corpus: vocabulary size, tokens per character, average tokens per sample.

    python -m colossal_llama2.tokenizer.stats --tokenizer_dirs llama2,llama2-zh --data_input_dirs data/

"Tokens per character" is the upstream README's "compression rate" (LLaMA-2 about 1.2 on Chinese, the
extended tokenizer about 0.66): lower is better. Counts exclude special tokens (no <s>).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from colossal_llama2.tokenizer.corpus import expand_paths, iter_corpus_texts
from colossal_llama2.utils.errors import UserInputError, run_cli


@dataclass
class TokenizerStats:
    name: str
    vocab_size: int
    samples: int
    characters: int
    tokens: int

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / self.characters if self.characters else float("nan")

    @property
    def tokens_per_sample(self) -> float:
        return self.tokens / self.samples if self.samples else float("nan")


def measure(tokenizer_dir: str, texts: list[str], batch_size: int = 256) -> TokenizerStats:
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise UserInputError(f"{tokenizer_dir} is not a directory", where="--tokenizer_dirs")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load a tokenizer from {tokenizer_dir}: {err}", where="--tokenizer_dirs") from None
    tokens = 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
        tokens += sum(len(ids) for ids in batch)
    return TokenizerStats(name=tokenizer_dir, vocab_size=len(tokenizer), samples=len(texts),
                          characters=sum(len(t) for t in texts), tokens=tokens)


def disagreements(tokenizer_dir: str, texts: list[str]) -> dict[str, int]:
    """Lines on which the fast tokenizer, the slow one and sentencepiece itself give different ids."""
    import sentencepiece as spm
    from transformers import AutoTokenizer, LlamaTokenizer

    fast = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    slow = LlamaTokenizer.from_pretrained(tokenizer_dir)
    sp = spm.SentencePieceProcessor(model_file=str(Path(tokenizer_dir) / "tokenizer.model"))
    fast_ids = fast(texts, add_special_tokens=False)["input_ids"]
    out = {"fast != slow": 0, "fast != sentencepiece": 0}
    for text, ids in zip(texts, fast_ids):
        out["fast != slow"] += slow.encode(text, add_special_tokens=False) != ids
        out["fast != sentencepiece"] += sp.encode(text) != ids
    return out


def format_table(rows: list[TokenizerStats]) -> str:
    header = "| Tokenizer | Vocabulary size | Tokens per character | Average tokens per sample |"
    lines = [header, "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.vocab_size} | {r.tokens_per_char:.3f} | {r.tokens_per_sample:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer_dirs", required=True, help="comma-separated tokenizer directories to compare")
    parser.add_argument("--data_input_dirs", required=True,
                        help="comma-separated jsonl/txt files or dirs ({'source','target'} or {'text'} records)")
    parser.add_argument("--max_samples", type=int, default=None, help="use only the first N samples")
    parser.add_argument("--check_agreement", action="store_true",
                        help="also count samples on which fast, slow (LlamaTokenizer) and sentencepiece disagree")
    args = parser.parse_args(argv)
    texts = []
    for text in iter_corpus_texts(expand_paths(args.data_input_dirs, "--data_input_dirs")):
        if args.max_samples is not None and len(texts) >= args.max_samples:
            break
        texts.append(text)
    if not texts:
        raise UserInputError("no samples found", where="--data_input_dirs")
    names = [d.strip() for d in args.tokenizer_dirs.split(",") if d.strip()]
    if not names:
        raise UserInputError("no tokenizer directories given", where="--tokenizer_dirs")
    rows = [measure(name, texts) for name in names]
    print(f"{len(texts)} samples, {rows[0].characters} characters")
    print(format_table(rows))
    if args.check_agreement:
        for name in names:
            counts = disagreements(name, texts)
            print(f"{name}: " + ", ".join(f"{k}: {v} of {len(texts)} samples" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    run_cli(main)
