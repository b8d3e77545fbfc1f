"""Vocabulary extension of byte-level BPE bases (LLaMA-3-like, Qwen2-like): appended merges, checked independently.

The expectations are computed through transformers' ``AutoTokenizer`` on the written files (the tokenizers
library's own BPE), never through the extension's own planning code.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from colossal_llama2.tokenizer import bpe_extension
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import run_script
from tests.helpers.synthetic_text import SyntheticChinese

SCRIPT = "colossal_llama2/tokenizer/init_tokenizer.py"
REPO = Path(__file__).resolve().parents[1]


def auto(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def new_tokens(base, extended) -> dict[str, int]:
    old = base.get_vocab()
    return {t: i for t, i in extended.get_vocab().items() if t not in old}


def whole_text(token: str) -> str | None:
    """The text of a byte-level token, or None when it is part of a character."""
    # GPT-2's byte table, rebuilt here independently of the module under test.
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = {chr(c): b for b, c in zip(bs, cs)}
    try:
        return bytes(table[c] for c in token).decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.fixture(scope="module")
def chinese_corpus(tmp_path_factory, chinese_lines) -> Path:
    lines = SyntheticChinese(seed=3).lines(1500) + chinese_lines * 3
    path = tmp_path_factory.mktemp("corpus") / "zh.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["llama3", "qwen2"])
def learned(request, tmp_path_factory, chinese_corpus, llama3_tokenizer_dir, qwen2_tokenizer_dir):
    source = llama3_tokenizer_dir if request.param == "llama3" else qwen2_tokenizer_dir
    target = tmp_path_factory.mktemp(f"learned_{request.param}") / "tok"
    report = extend_tokenizer(source, target, train_corpus=str(chinese_corpus), num_new_pieces=600)
    return request.param, source, target, report


def test_learned_merges_keep_every_base_token_and_file(learned):
    family, source, target, report = learned
    base, ext = auto(source), auto(target)
    assert report.added_from_corpus == 600 and len(ext) == len(base) + 600 == report.final_size
    old, now = base.get_vocab(), ext.get_vocab()
    assert all(now[t] == i for t, i in old.items())  # specials included
    assert sorted(i for t, i in now.items() if t not in old) == list(range(len(base), len(ext)))
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):  # as the source has them
        assert (target / name).is_file() == (source / name).is_file()
        assert not (source / name).is_file() or (target / name).read_bytes() == (source / name).read_bytes()
    assert ext.chat_template == base.chat_template and ext.bos_token == base.bos_token
    src, dst = (json.loads((d / "tokenizer.json").read_text(encoding="utf-8")) for d in (source, target))
    assert dst["added_tokens"] == src["added_tokens"]  # new tokens are merges, never added tokens
    assert dst["model"]["merges"][:len(src["model"]["merges"])] == src["model"]["merges"]
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert dst[key] == src[key]
    if family == "qwen2":  # the slow files follow the new vocabulary
        specials = {t["content"] for t in src["added_tokens"]}
        assert json.loads((target / "vocab.json").read_text(encoding="utf-8")) == \
            {t: i for t, i in dst["model"]["vocab"].items() if t not in specials}
        assert len((target / "merges.txt").read_text(encoding="utf-8").splitlines()) == len(dst["model"]["merges"]) + 1


def test_every_new_whole_token_is_produced_for_its_own_text(learned):
    _, source, target, report = learned
    base, ext = auto(source), auto(target)
    added = new_tokens(base, ext)
    texts = {t: whole_text(t) for t in added}
    whole = {t: s for t, s in texts.items() if s is not None}
    assert len(whole) > 300  # most learned tokens are whole characters or words
    for token, text in whole.items():
        assert ext.encode(text, add_special_tokens=False) == [added[token]], text
    assert report.unreachable == []


def test_round_trip_english_unchanged_and_chinese_compressed(learned, english_lines, chinese_lines):
    family, source, target, report = learned
    base, ext = auto(source), auto(target)
    english = english_lines + (REPO / "examples/demo_data/base_english.txt").read_text(encoding="utf-8").splitlines()
    same = sum(base.encode(line) == ext.encode(line) for line in english)
    assert same >= 0.99 * len(english)
    texts = english_lines + chinese_lines + SyntheticChinese(seed=9).lines(100) + ["混合 text 与 123 数字\n\n 空格"]
    for text in texts:
        assert ext.decode(ext.encode(text, add_special_tokens=False)) == text
    if family == "llama3":  # the bos post-processor travels
        assert ext.encode("你好")[0] == ext.convert_tokens_to_ids("<|begin_of_text|>")
    before = sum(len(base.encode(t, add_special_tokens=False)) for t in chinese_lines)
    after = sum(len(ext.encode(t, add_special_tokens=False)) for t in chinese_lines)
    assert after < 0.8 * before
    (name, tpc_before, tpc_after), = report.compression
    assert "held-out" in name and tpc_after < tpc_before


def test_vocab_size_is_exact(tmp_path, llama3_tokenizer_dir, chinese_corpus):
    report = extend_tokenizer(llama3_tokenizer_dir, tmp_path / "t", train_corpus=str(chinese_corpus), vocab_size=1344)
    assert len(auto(tmp_path / "t")) == 1344 == report.final_size


def test_listed_pieces_become_merges_not_added_tokens(tmp_path, qwen2_tokenizer_dir):
    pieces = ["人工智能", "你好", " 世界", "中文", "你好，世界", " the"]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n" for p in pieces), encoding="utf-8")
    report = extend_tokenizer(qwen2_tokenizer_dir, tmp_path / "t", expand_tokens_file=str(path))
    base, ext = auto(qwen2_tokenizer_dir), auto(tmp_path / "t")
    for piece in ("人工智能", "你好", " 世界", "中文"):
        ids = ext.encode(piece, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] >= len(base), piece
    assert report.added_from_file == 4
    assert report.skipped["spans several pre-tokenized words (BPE never merges across them)"] == 1
    assert report.skipped["already in the source vocabulary"] == 1  # " the"
    # A merge, not an added token: inside a longer word the text splits by BPE, so "中文" inside "中文字"
    # is whatever BPE makes of the whole word, and the text decodes back exactly.
    tok = json.loads((tmp_path / "t" / "tokenizer.json").read_text(encoding="utf-8"))
    assert [t["content"] for t in tok["added_tokens"]] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert ext.decode(ext.encode("说中文字很好")) == "说中文字很好"
    assert len(ext) == report.final_size == len(base) + report.added_from_file + report.added_support


def test_unreachable_learned_tokens_are_left_out_with_what_builds_on_them(tmp_path, qwen2_tokenizer_dir, monkeypatch):
    # (Qwen2-like: no ignore_merges, which would make every whole-word token reachable.)
    # Merges in an order that can never produce "qxz" alone: ("x","z") outranks ("qx","z") and leaves [q, xz].
    def fake_learn(counts, table, wanted, **kw):
        assert not {"qx", "xz", "qxz"} & set(table.vocab)
        return [("x", "z"), ("q", "x"), ("qx", "z"), ("qxz", "j"), ("å", "¥")]

    monkeypatch.setattr(bpe_extension, "learn_merges", fake_learn)
    corpus = tmp_path / "c.txt"
    corpus.write_text("你好你好\n" * 3, encoding="utf-8")
    report = extend_tokenizer(qwen2_tokenizer_dir, tmp_path / "t", train_corpus=str(corpus), num_new_pieces=10,
                              keep_ascii_merges=True)
    ext = auto(tmp_path / "t")
    vocab = ext.get_vocab()
    assert "qxz" not in vocab and "qxzj" not in vocab  # left out, and what is built on it
    assert report.dropped_unreachable == ["qxz", "qxzj"]
    for token in ("xz", "qx"):
        assert vocab[token] >= 1003 and ext.encode(token, add_special_tokens=False) == [vocab[token]]


def test_refusals_name_the_tokenizer_type_and_write_nothing(tmp_path, english_lines):
    from tokenizers import Tokenizer, models, trainers

    for model, trainer in ((models.Unigram(), trainers.UnigramTrainer(vocab_size=200, show_progress=False)),
                           (models.WordPiece(unk_token="[UNK]"), trainers.WordPieceTrainer(vocab_size=200,
                                                                                           show_progress=False))):
        source = tmp_path / type(model).__name__
        source.mkdir()
        tok = Tokenizer(model)
        tok.train_from_iterator(english_lines, trainer=trainer)
        tok.save(str(source / "tokenizer.json"))
        (source / "tokenizer_config.json").write_text("{}", encoding="utf-8")
        result = run_script([SCRIPT, "--source_tokenizer_dir", source, "--target_tokenizer_dir", tmp_path / "out",
                             "--expand_tokens_file", str(source / "tokenizer.json")])
        assert result.returncode == 2
        assert f"its model is {type(model).__name__}, not BPE" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["no_new_merges", "only_known_pieces", "vocab_size_below"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, llama3_tokenizer_dir, english_lines, case):
    pieces = tmp_path / "p.jsonl"
    pieces.write_text('{"piece": " the"}\n{"piece": " and"}\n', encoding="utf-8")
    english = tmp_path / "en.txt"
    english.write_text("\n".join(english_lines) + "\n", encoding="utf-8")
    args = {"no_new_merges": ["--train_corpus", english, "--num_new_pieces", "10"],
            "only_known_pieces": ["--expand_tokens_file", pieces],
            "vocab_size_below": ["--expand_tokens_file", pieces, "--vocab_size", "900"]}[case]
    result = run_script([SCRIPT, "--source_tokenizer_dir", llama3_tokenizer_dir, "--target_tokenizer_dir",
                         tmp_path / "out", *args])
    assert result.returncode == 2, result.stderr
    line, = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --") and {"no_new_merges": "no new merges to learn",
                                             "only_known_pieces": "nothing to add",
                                             "vocab_size_below": "must exceed the source vocabulary (1005"}[case] in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_keep_ascii_merges_learns_from_an_english_domain_corpus(tmp_path, llama3_tokenizer_dir):
    corpus = tmp_path / "domain.txt"
    corpus.write_text("\n".join(["hyperparameterization of transformerization"] * 20) + "\n", encoding="utf-8")
    with pytest.raises(UserInputError, match="keep_ascii_merges"):
        extend_tokenizer(llama3_tokenizer_dir, tmp_path / "a", train_corpus=str(corpus), num_new_pieces=5)
    extend_tokenizer(llama3_tokenizer_dir, tmp_path / "b", train_corpus=str(corpus), num_new_pieces=5,
                     keep_ascii_merges=True)
    assert len(auto(tmp_path / "b").encode(" hyperparameterization", add_special_tokens=False)) < \
        len(auto(llama3_tokenizer_dir).encode(" hyperparameterization", add_special_tokens=False))


def test_learning_37000_merges_from_6_mb_of_chinese_is_fast(tmp_path, llama3_tokenizer_dir):
    gen, lines, size = SyntheticChinese(seed=5), [], 0
    while size < 6_000_000:
        line = "".join(gen.sentence() for _ in range(5))
        lines.append(line)
        size += len(line.encode("utf-8"))
    corpus = tmp_path / "zh6m.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    report = extend_tokenizer(llama3_tokenizer_dir, tmp_path / "t", train_corpus=str(corpus), num_new_pieces=37000)
    elapsed = time.perf_counter() - start
    assert report.added_from_corpus == 37000 and report.unreachable == []
    assert elapsed < 120, f"{elapsed:.0f} s"
