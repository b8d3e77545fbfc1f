"""A tiny LLaMA-2-like base model, built locally as a stand-in for a downloaded one.

Tests and ``make demo`` cannot download LLaMA-2, so they build its miniature: a sentencepiece BPE
tokenizer of the same kind (byte fallback, ``<unk>``=0, ``<s>``=1, ``</s>``=2, digits split, no
normalisation, trained on English only so Chinese is covered only through byte fallback, as in LLaMA-2)
and a small random ``LlamaForCausalLM`` saved with ``save_pretrained`` (safetensors) beside it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

from .utils.logging import get_logger

logger = get_logger(__name__)

TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def train_llama_like_sentencepiece(lines: Iterable[str], vocab_size: int = 600) -> bytes:
    """Train a LLaMA-2-style sentencepiece BPE model on ``lines``; return the serialized model proto."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines if line.strip()]),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=0.99995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,  # deterministic output
        minloglevel=2,
    )
    return model.getvalue()


SPECIAL_PIECES = {0: "<unk>", 1: "<s>", 2: "</s>"}


def _special(content: str, with_special_flag: bool) -> dict:
    token = {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    return token | {"special": True} if with_special_flag else token


def save_llama_tokenizer(sp_model_bytes: bytes, out_dir: str | os.PathLike) -> Path:
    """Write ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json`` like LLaMA-2's.

    The two JSON files are written here, as LLaMA-2 ships them (non-legacy, bos added), rather than by a tokenizer
    class's ``save_pretrained``: transformers 5 has no sentencepiece-backed LlamaTokenizer to save them."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(sp_model_bytes)
    config = {
        "add_bos_token": True, "add_eos_token": False, "add_prefix_space": True,
        "added_tokens_decoder": {str(i): _special(text, True) for i, text in SPECIAL_PIECES.items()},
        "bos_token": "<s>", "clean_up_tokenization_spaces": False, "eos_token": "</s>", "extra_special_tokens": {},
        "legacy": False, "model_max_length": 1000000000000000019884624838656, "pad_token": None,
        "sp_model_kwargs": {}, "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False,
    }
    special_map = {f"{name}_token": _special(SPECIAL_PIECES[i], False) for i, name in ((1, "bos"), (2, "eos"), (0, "unk"))}
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (out_dir / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out_dir


def build_tiny_tokenizer(corpus_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                         vocab_size: int = 600) -> Path:
    lines: list[str] = []
    for path in corpus_files:
        lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
    return save_llama_tokenizer(train_llama_like_sentencepiece(lines, vocab_size), out_dir)


def build_tiny_llama(tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *, hidden_size: int = 64,
                     intermediate_size: int = 176, num_hidden_layers: int = 2, num_attention_heads: int = 4,
                     num_key_value_heads: int = 2, max_position_embeddings: int = 1024,
                     tie_word_embeddings: bool = False, seed: int = 0, torch_dtype: str = "float32") -> Path:
    """Save a random ``LlamaForCausalLM`` sized to the tokenizer, with the tokenizer files copied in."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        torch_dtype=torch_dtype,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, torch_dtype))
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(tokenizer_dir) / name, out_dir / name)
    logger.info("tiny LLaMA: %d parameters, vocab %d -> %s", model.num_parameters(), config.vocab_size, out_dir)
    return out_dir


# --- byte-level BPE bases (LLaMA-3, Qwen2 families) -------------------------------------------------------

# The pre-tokenizer split patterns of LLaMA-3 (tiktoken cl100k-like) and Qwen2 (digits one at a time).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# Mistral's [INST] format (its v1/v3 templates differ only in spacing): no system role of its own.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

BYTE_LEVEL_FLAVOURS = {
    # bos added by a post-processor, untied embeddings, ignore_merges as in Meta's tokenizer.json
    "llama3": dict(split=LLAMA3_SPLIT, nfc=False, ignore_merges=True, bos="<|begin_of_text|>",
                   eos="<|end_of_text|>", specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                    "<|end_header_id|>", "<|eot_id|>"],
                   chat_template=LLAMA3_CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast"),
    # no bos token at all, NFC normaliser, ChatML, the slow files (vocab.json, merges.txt) beside
    "qwen2": dict(split=QWEN2_SPLIT, nfc=True, ignore_merges=False, bos=None, eos="<|endoftext|>",
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], chat_template=CHATML_TEMPLATE,
                  tokenizer_class="Qwen2Tokenizer"),
}


def train_byte_level_bpe(lines: Iterable[str], flavour: str = "llama3", vocab_size: int = 1000):
    """A ``tokenizers.Tokenizer`` of the family ``flavour`` trained on ``lines`` (specials after the BPE vocab)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    spec = BYTE_LEVEL_FLAVOURS[flavour]
    tokenizer = Tokenizer(models.BPE(ignore_merges=spec["ignore_merges"]))
    if spec["nfc"]:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["split"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([line for line in lines if line.strip()], trainer=trainer)
    tokenizer.add_special_tokens(spec["specials"])
    byte_level = processors.ByteLevel(trim_offsets=False)
    if spec["bos"]:
        bos = spec["bos"]
        template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                 special_tokens=[(bos, tokenizer.token_to_id(bos))])
        tokenizer.post_processor = processors.Sequence([byte_level, template])
    else:
        tokenizer.post_processor = byte_level
    return tokenizer


def build_byte_level_tokenizer(corpus_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                               flavour: str = "llama3", vocab_size: int = 1000) -> Path:
    """Write a LLaMA-3-like or Qwen2-like tokenizer dir (tokenizer.json + tokenizer_config.json + ...)."""
    import json

    from transformers import PreTrainedTokenizerFast

    spec = BYTE_LEVEL_FLAVOURS[flavour]
    lines: list[str] = []
    for path in corpus_files:
        lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
    wrapped = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(lines, flavour, vocab_size),
                                      bos_token=spec["bos"], eos_token=spec["eos"],
                                      pad_token=spec["eos"] if flavour == "qwen2" else None,
                                      chat_template=spec["chat_template"], clean_up_tokenization_spaces=False,
                                      model_max_length=131072)
    out_dir = Path(out_dir)
    wrapped.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = spec["tokenizer_class"]
    config["model_input_names"] = ["input_ids", "attention_mask"]  # as both families ship (no token_type_ids)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if flavour == "qwen2":  # Qwen ships the slow tokenizer's files too
        from .tokenizer.bpe_surgery import BPETable

        table = BPETable.load(out_dir / "tokenizer.json", "tokenizer")
        for name, data in table.slow_files().items():
            (out_dir / name).write_bytes(data)
    return out_dir


# The tiny model of each family: the settings that make it that family (model_type, then what differs from the
# defaults at this size). Families transformers 4.51 does not know (smollm3, olmo3) need the transformers 5 stack.
TINY_FAMILIES = {
    # GQA 4:1, LLaMA-3.1's rope scaling, untied
    "llama3": ("llama", dict(num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=False,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 256})),
    "qwen2": ("qwen2", dict(num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=True,
                            use_sliding_window=False, sliding_window=None)),  # qkv bias, tied
    "qwen3": ("qwen3", dict(num_key_value_heads=2, head_dim=16, rope_theta=1000000.0, tie_word_embeddings=True,
                            use_sliding_window=False, sliding_window=None)),  # per-head q/k norms, tied
    "mistral": ("mistral", dict(num_key_value_heads=4, sliding_window=None, tie_word_embeddings=False)),
    # 1 + weight norms, norms around attention and MLP, local/global layers, tied, scaled embeddings
    "gemma3": ("gemma3_text", dict(num_key_value_heads=2, head_dim=16, sliding_window=16, tie_word_embeddings=True,
                                   query_pre_attn_scalar=16)),
    # every 4th layer without rope (NoPE), tied
    "smollm3": ("smollm3", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    # post-norm (norms after attention and MLP), q/k norms over all heads, sliding-window layers, untied
    "olmo3": ("olmo3", dict(num_key_value_heads=8, sliding_window=16, tie_word_embeddings=False)),
}


def family_known(family: str) -> bool:
    """Whether the installed transformers has ``family``'s model type."""
    from transformers import CONFIG_MAPPING

    return TINY_FAMILIES[family][0] in CONFIG_MAPPING


def build_tiny_family_model(family: str, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                            hidden_size: int = 64, num_hidden_layers: int = 2, seed: int = 0) -> Path:
    """A random tiny model of ``family`` (see ``TINY_FAMILIES``) sized to the tokenizer, saved with its tokenizer
    files."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    model_type, settings = TINY_FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=3 * hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=8, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, torch_dtype="float32",
        pad_token_id=None, **settings)  # a family's default pad id (Gemma's 0, SmolLM3's 128004) is not ours
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for path in Path(tokenizer_dir).iterdir():
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
    logger.info("tiny %s: %d parameters, vocab %d -> %s", family, model.num_parameters(), config.vocab_size, out_dir)
    return out_dir
