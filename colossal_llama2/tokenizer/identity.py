"""A tokenizer's identity: a digest of everything that decides the ids a text gets.

Data preparation records it in every part's meta; train.py compares it with the model's tokenizer before step 1,
so data tokenized for another model (a 32,000-piece LLaMA-2 vocabulary under a 128,256-row LLaMA-3 model, Qwen3 ids
fed to a LLaMA-3 model) is refused instead of trained on.

The digest covers the vocabulary with its ids (added tokens included), the BPE merges, the special tokens and the
ids of a probe text with the tokenizer's own special tokens (which catches the normaliser, pre-tokenizer and the
bos/eos convention by what they do, not by how one version of the tokenizers library writes them down).
"""
from __future__ import annotations

import hashlib
import json

# Spaces at the start, runs of spaces, English, digits, Chinese, a newline, punctuation and an emoji.
PROBE = "  Hello world, 1234 times.\n清晨的河边很安静。 A b\u3000c 🙂!"
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token")


def tokenizer_digest(tokenizer) -> str:
    """16 hex digits of sha256 over the tokenizer's identity (see the module docstring)."""
    merges = []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    identity = {
        "vocab": [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])],
        "merges": merges,
        "special": {name: getattr(tokenizer, name, None) for name in SPECIAL_ATTRIBUTES},
        "probe": tokenizer(PROBE, add_special_tokens=True)["input_ids"],
    }
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
