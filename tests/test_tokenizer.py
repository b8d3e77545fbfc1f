"""Vocabulary extension: old ids kept, new pieces used, slow == fast, corpus-learned pieces, CLI errors."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from colossal_llama2.tokenizer import sp_surgery
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import run_script
from colossal_llama2.utils.stack import transformers_5
from tests.helpers.slow import slow_tokenizer

SCRIPT = "colossal_llama2/tokenizer/init_tokenizer.py"
MODULE = "colossal_llama2.tokenizer.init_tokenizer"
IDIOM = "远处传来"  # in chinese.txt; none of its 2-char parts is a frequent bigram there


def _cjk(s: str) -> bool:
    return all("\u4e00" <= c <= "\u9fff" for c in s)


def chinese_pieces(lines: list[str]) -> list[str]:
    """A piece list derived from the test text: every character, bigrams seen twice or more, one 4-char word."""
    chars = Counter(c for line in lines for c in line if _cjk(c))
    bigrams = Counter(line[i:i + 2] for line in lines for i in range(len(line) - 1) if _cjk(line[i:i + 2]))
    pieces = [c for c, _ in chars.most_common()] + [b for b, n in bigrams.most_common() if n >= 2]
    assert IDIOM[:2] not in pieces and IDIOM[1:3] not in pieces and IDIOM[2:] not in pieces
    return pieces + [p for p in ("你好", IDIOM, "人工智能") if p not in pieces]


def write_pieces(path: Path, pieces: list[str]) -> Path:
    path.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n" for p in pieces), encoding="utf-8")
    return path


def load_proto(directory: Path) -> sp_pb2.ModelProto:
    proto = sp_pb2.ModelProto()
    proto.ParseFromString((Path(directory) / "tokenizer.model").read_bytes())
    return proto


def mixed_texts(english: list[str], chinese: list[str], n_random: int = 300) -> list[str]:
    """Fixture lines, mixed lines, digits/newlines/spaces, and random substrings of all of it."""
    rng = random.Random(0)
    texts = english + chinese + ["你好", "我说你好", "人工智能很有用。", "hello 你好 world", "你好\n\n世界 123 abc",
                                 "AI 和人工智能 2024年", "tab\tand  two  spaces 你 好", IDIOM, f"他说{IDIOM}了"]
    corpus = "\n".join(english + chinese)
    for _ in range(n_random):
        start = rng.randrange(len(corpus))
        texts.append(corpus[start:start + rng.randrange(1, 80)])
    for _ in range(n_random // 3):
        texts.append(rng.choice(english)[: rng.randrange(1, 60)] + rng.choice(["", " ", "\n"]) +
                     rng.choice(chinese)[: rng.randrange(1, 30)])
    return [t for t in texts if t]


@pytest.fixture(scope="module")
def zh_pieces(chinese_lines) -> list[str]:
    return chinese_pieces(chinese_lines)


@pytest.fixture(scope="module")
def extended(tmp_path_factory, tiny_tokenizer_dir, zh_pieces):
    tmp = tmp_path_factory.mktemp("extended")
    pieces_file = write_pieces(tmp / "pieces.jsonl", zh_pieces)
    report = extend_tokenizer(tiny_tokenizer_dir, tmp / "tok", expand_tokens_file=str(pieces_file))
    return tmp / "tok", report


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer_dir, extended):
    from transformers import AutoTokenizer

    target, _ = extended
    return {"src_slow": slow_tokenizer(tiny_tokenizer_dir),
            "src_fast": AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)),
            "slow": slow_tokenizer(target),
            "fast": AutoTokenizer.from_pretrained(str(target))}


def test_old_pieces_and_settings_untouched(tiny_tokenizer_dir, extended, zh_pieces):
    target, report = extended
    src, new = load_proto(tiny_tokenizer_dir), load_proto(target)
    assert report.source_size == len(src.pieces) == 600
    for a, b in zip(src.pieces, new.pieces):
        assert (a.piece, a.score, a.type) == (b.piece, b.score, b.type)
    assert new.normalizer_spec == src.normalizer_spec
    assert new.trainer_spec == src.trainer_spec  # byte_fallback, model type, special ids
    assert len(new.pieces) == report.final_size == 600 + report.added_from_file + report.added_support
    assert report.added_from_file == len(set(zh_pieces))
    appended = new.pieces[600:]
    assert all(p.type == sp_surgery.NORMAL for p in appended)
    scores = [p.score for p in appended]
    assert max(scores) < min(p.score for p in src.pieces if p.type == sp_surgery.NORMAL)
    assert all(a > b for a, b in zip(scores, scores[1:])), "scores must be distinct and decreasing"
    order = {p.piece: i for i, p in enumerate(appended)}
    assert [order[p] for p in zh_pieces] == sorted(order[p] for p in zh_pieces)  # file order kept
    assert report.unreachable == []


def test_special_tokens_and_files(tiny_tokenizer_dir, extended, tokenizers):
    from transformers import AutoTokenizer, LlamaTokenizerFast, PreTrainedTokenizerFast

    target, report = extended
    assert (target / "special_tokens_map.json").read_bytes() == (Path(tiny_tokenizer_dir) / "special_tokens_map.json").read_bytes()
    # tokenizer_config.json: the same settings, except the two that would make transformers ignore or
    # mis-apply tokenizer.json (add_prefix_space: its default; the special tokens' normalized flag).
    src_config = json.loads((Path(tiny_tokenizer_dir) / "tokenizer_config.json").read_text())
    config = json.loads((target / "tokenizer_config.json").read_text())
    assert src_config.pop("add_prefix_space") is True and "add_prefix_space" not in config
    for token in src_config["added_tokens_decoder"].values():
        token["normalized"] = True
    if transformers_5():  # its LlamaTokenizer would rebuild the pipeline without tokenizer.json's normalizer
        src_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    assert config == src_config
    assert (target / "tokenizer.json").is_file()
    auto = AutoTokenizer.from_pretrained(str(target))
    assert isinstance(auto, PreTrainedTokenizerFast if transformers_5() else LlamaTokenizerFast)
    for tok in (auto, tokenizers["slow"], tokenizers["fast"]):
        assert len(tok) == report.final_size
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_english_keeps_its_ids(tokenizers, english_lines):
    for line in english_lines:
        ids = tokenizers["src_slow"].encode(line)
        assert tokenizers["slow"].encode(line) == ids
        assert tokenizers["fast"].encode(line) == ids


def test_new_pieces_are_used_at_start_and_mid_sentence(tokenizers, extended, zh_pieces):
    target, _ = extended
    slow = tokenizers["slow"]
    nihao = slow.convert_tokens_to_ids("你好")
    assert nihao >= 600
    # At the start of a text the dummy prefix gives "▁" + "你好" ("▁你好" is not a piece): still one id for 你好.
    assert slow.tokenize("你好") == ["▁", "你好"]
    assert slow.tokenize("我说你好") == ["▁", "我", "说", "你好"]
    assert slow.encode("他们都说你好。", add_special_tokens=False).count(nihao) == 1
    for name in ("slow", "fast"):
        assert tokenizers[name].tokenize(f"他说{IDIOM}了") == ["▁", "他", "说", IDIOM, "了"]
    # Every requested piece, alone and without the dummy prefix, encodes to exactly itself.
    sp = sp_surgery.processor_without_dummy_prefix(load_proto(target))
    for piece in zh_pieces:
        assert sp.encode(piece) == [sp.piece_to_id(piece)], piece


def test_chinese_compression_improves(tokenizers, chinese_lines):
    chars = sum(len(line) for line in chinese_lines)
    old = sum(len(tokenizers["src_slow"].encode(line, add_special_tokens=False)) for line in chinese_lines)
    new = sum(len(tokenizers["slow"].encode(line, add_special_tokens=False)) for line in chinese_lines)
    assert old / chars > 2.5  # byte fallback: 3 bytes per character
    assert new / chars < 1.1


def test_fast_matches_slow_on_many_texts(tokenizers, english_lines, chinese_lines):
    texts = mixed_texts(english_lines, chinese_lines)
    disagreements = []
    for text in texts:
        slow, fast = tokenizers["slow"].encode(text), tokenizers["fast"].encode(text)
        if slow != fast:
            disagreements.append(text)
        assert tokenizers["slow"].decode(slow, skip_special_tokens=True) == text
    assert disagreements == []  # leading spaces included (see fast_file.py)
    for line in english_lines + chinese_lines:
        ids = tokenizers["fast"].encode(line)
        assert tokenizers["fast"].decode(ids, skip_special_tokens=True) == line


def test_multichar_piece_needs_intermediates_and_chars(tiny_tokenizer_dir):
    """Why plan_piece exists: a bare appended 4-char word is never produced, by either encoder."""
    src = load_proto(tiny_tokenizer_dir)
    naive = sp_pb2.ModelProto()
    naive.CopyFrom(src)
    low = min(p.score for p in src.pieces)
    sp_surgery.append_to_proto(naive, [("人工智能", low - 1)])
    sp = sp_surgery.processor_without_dummy_prefix(naive)
    assert sp.encode("人工智能", out_type=str) != ["人工智能"]
    # With its characters only, sentencepiece still cannot reach it (no 2-char intermediate merge).
    sp_surgery.append_to_proto(naive, [(c, low - 2 - i) for i, c in enumerate("人工智能")])
    sp = sp_surgery.processor_without_dummy_prefix(naive)
    assert sp.encode("人工智能", out_type=str) == list("人工智能")

    vocab = sp_surgery.Vocabulary.from_proto(src)
    plan = sp_surgery.plan_piece("人工智能", vocab)
    assert plan[:5] == ["人", "工", "智", "能", "人工智能"]
    assert set(plan[5:]) == {"人工", "智能"}  # balanced halves
    for p in plan:
        vocab.add(p)
    fixed = sp_pb2.ModelProto()
    fixed.CopyFrom(src)
    sp_surgery.append_to_proto(fixed, vocab.appended)
    assert sp_surgery.unreachable_pieces(fixed, ["人工智能", "人工", "智能"]) == []
    assert sp_surgery.bpe_encode("人工智能", vocab.scores) == ["人工智能"]
    assert sp_surgery.plan_piece("人工智能", vocab) == []  # already there


def test_skips_are_counted(tmp_path, tiny_tokenizer_dir):
    pieces = write_pieces(tmp_path / "p.jsonl", ["你好", "▁the", "你好", "你", "<s>", "大家好", "大家 好"])
    report = extend_tokenizer(tiny_tokenizer_dir, tmp_path / "out", expand_tokens_file=str(pieces))
    assert report.skipped == {"already in the source vocabulary": 2, "repeated": 1,
                              "already added as a character/intermediate of an earlier piece": 1}
    new = [p.piece for p in load_proto(tmp_path / "out").pieces[600:]]
    assert new[:3] == ["你", "好", "你好"]
    assert "大家▁好" in new  # spaces are written as sentencepiece's '▁'
    assert report.added_from_file == 3 and report.final_size == 600 + len(new)


def test_train_corpus_learns_exactly_n_pieces(tmp_path, tiny_tokenizer_dir, data_dir, english_lines):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = (data_dir / "chinese.txt").read_text(encoding="utf-8").splitlines()
    (corpus / "a.jsonl").write_text("".join(json.dumps({"source": "", "target": t, "category": "x"},
                                                       ensure_ascii=False) + "\n" for t in lines[:20]), encoding="utf-8")
    (corpus / "b.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines[20:]),
                                    encoding="utf-8")
    out1 = tmp_path / "t1"
    report = extend_tokenizer(tiny_tokenizer_dir, out1, train_corpus=str(corpus), num_new_pieces=120)
    assert report.final_size == 600 + 120
    assert report.added_from_corpus + report.added_support == 120
    proto = load_proto(out1)
    assert report.unreachable == []
    learned = [p.piece for p in proto.pieces[600:]]
    assert len(set(learned)) == 120 and not set(learned) & {p.piece for p in load_proto(tiny_tokenizer_dir).pieces}
    assert any(len(p.strip("▁")) >= 2 for p in learned)  # words, not only characters
    # Deterministic: the same input gives the same bytes.
    extend_tokenizer(tiny_tokenizer_dir, tmp_path / "t2", train_corpus=str(corpus), num_new_pieces=120)
    assert (tmp_path / "t2" / "tokenizer.model").read_bytes() == (out1 / "tokenizer.model").read_bytes()
    # English still encodes as before.
    src = spm.SentencePieceProcessor(model_file=str(Path(tiny_tokenizer_dir) / "tokenizer.model"))
    new = spm.SentencePieceProcessor(model_file=str(out1 / "tokenizer.model"))
    assert all(src.encode(line) == new.encode(line) for line in english_lines)
    # Together with a piece file: the file's pieces first, then the corpus budget.
    pieces = write_pieces(tmp_path / "p.jsonl", ["人工智能"])
    both = extend_tokenizer(tiny_tokenizer_dir, tmp_path / "t3", expand_tokens_file=str(pieces),
                            train_corpus=str(data_dir / "chinese.txt"), num_new_pieces=50)
    both_pieces = [p.piece for p in load_proto(tmp_path / "t3").pieces[600:]]
    assert both_pieces[4] == "人工智能" and both.added_from_file == 1
    assert len(both_pieces) == 7 + 50  # 4 chars + word + 2 halves, then exactly 50 from the corpus


def test_unigram_source(tmp_path, english_lines, chinese_lines):
    """A unigram source: new pieces appended just below the old minimum score are chosen by Viterbi."""
    import io

    from transformers import AutoTokenizer

    from colossal_llama2.tiny_base import save_llama_tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(english_lines), model_writer=model, model_type="unigram",
                                   vocab_size=400, byte_fallback=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, num_threads=1, minloglevel=2, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=-1)
    src = save_llama_tokenizer(model.getvalue(), tmp_path / "uni")
    pieces = write_pieces(tmp_path / "p.jsonl", chinese_pieces(chinese_lines))
    report = extend_tokenizer(src, tmp_path / "out", expand_tokens_file=str(pieces))
    assert report.unreachable == [] and report.added_support == 0
    slow_src, slow = slow_tokenizer(src), slow_tokenizer(tmp_path / "out")
    fast = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert slow.tokenize(f"他说{IDIOM}了") == ["▁", "他", "说", IDIOM, "了"]
    for line in english_lines:
        assert slow.encode(line) == slow_src.encode(line)
    for line in english_lines + chinese_lines:
        assert fast.encode(line) == slow.encode(line)


# ----------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("form", ["file", "module"])
def test_cli_runs_both_ways(tmp_path, tiny_tokenizer_dir, form):
    pieces = write_pieces(tmp_path / "p.jsonl", ["你好", "你好", "▁the", "人工智能"])
    entry = [SCRIPT] if form == "file" else ["-m", MODULE]
    proc = run_script([*entry, "--source_tokenizer_dir", tiny_tokenizer_dir, "--target_tokenizer_dir",
                       tmp_path / "out", "--expand_tokens_file", pieces], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "source vocabulary:          600" in proc.stdout
    assert "added from --expand_tokens_file: 2" in proc.stdout
    assert "skipped (repeated): 1" in proc.stdout and "skipped (already in the source vocabulary): 1" in proc.stdout
    assert f"final vocabulary:           {600 + 2 + 2 + 4 + 2}" in proc.stdout  # 你 好, 你好, 人 工 智 能, 人工智能 + 2 halves
    assert len(load_proto(tmp_path / "out").pieces) == 610


def _cli(tmp_path, source, pieces_lines=None, extra=(), target=None):
    args = [SCRIPT, "--source_tokenizer_dir", source, "--target_tokenizer_dir", target or tmp_path / "out"]
    if pieces_lines is not None:
        (tmp_path / "p.jsonl").write_text("\n".join(pieces_lines) + "\n", encoding="utf-8")
        args += ["--expand_tokens_file", tmp_path / "p.jsonl"]
    return run_script([*args, *extra], timeout=120)


def _copy_tokenizer(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (dst / name).write_bytes((Path(src) / name).read_bytes())
    return dst


def test_cli_errors(tmp_path, tiny_tokenizer_dir):
    ok_piece = ['{"piece": "你好"}']
    # Missing source files.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(tmp_path, empty, ok_piece)
    assert proc.returncode == 2 and "--source_tokenizer_dir" in proc.stderr and "tokenizer.model" in proc.stderr
    # Not a sentencepiece model at all.
    junk = _copy_tokenizer(tiny_tokenizer_dir, tmp_path / "junk")
    (junk / "tokenizer.model").write_bytes(b"\xff\xfe definitely not a protobuf")
    proc = _cli(tmp_path, junk, ok_piece)
    assert proc.returncode == 2 and "not a sentencepiece model" in proc.stderr and "tokenizer.model" in proc.stderr
    # A sentencepiece model of an unsupported type (WORD).
    word = _copy_tokenizer(tiny_tokenizer_dir, tmp_path / "word")
    proto = load_proto(word)
    proto.trainer_spec.model_type = 3
    (word / "tokenizer.model").write_bytes(proto.SerializeToString())
    proc = _cli(tmp_path, word, ok_piece)
    assert proc.returncode == 2 and "WORD is not supported" in proc.stderr
    # Malformed jsonl, empty and whitespace-only pieces: file:line.
    for lines, line_no, message in [(['{"piece": "你好"}', '{"piece": "好"'], 2, "malformed JSON"),
                                    (['{"piece": "你好"}', "", '{"piece": ""}'], 3, "empty or whitespace-only"),
                                    (['{"piece": "   "}'], 1, "empty or whitespace-only"),
                                    (['{"token": "x"}'], 1, "expected {\"piece\""),
                                    (['["你好"]'], 1, "expected a JSON object")]:
        proc = _cli(tmp_path, tiny_tokenizer_dir, lines)
        assert proc.returncode == 2, proc.stderr
        assert f"p.jsonl:{line_no}: " in proc.stderr and message in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists()  # nothing half-written
    # Missing piece file, and no input at all.
    proc = run_script([SCRIPT, "--source_tokenizer_dir", tiny_tokenizer_dir, "--target_tokenizer_dir",
                       tmp_path / "out", "--expand_tokens_file", tmp_path / "nope.jsonl"])
    assert proc.returncode == 2 and "--expand_tokens_file" in proc.stderr
    proc = _cli(tmp_path, tiny_tokenizer_dir, None, extra=["--train_corpus", tmp_path / "p.jsonl"])
    assert proc.returncode == 2 and "--num_new_pieces" in proc.stderr
    # Non-empty target: refused, then replaced with --overwrite.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    proc = _cli(tmp_path, tiny_tokenizer_dir, ok_piece, target=busy)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert (busy / "keep.txt").exists()
    proc = _cli(tmp_path, tiny_tokenizer_dir, ok_piece, target=busy, extra=["--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert not (busy / "keep.txt").exists() and (busy / "tokenizer.model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_added_tokens_beyond_sp_vocab_are_refused(tmp_path, tiny_tokenizer_dir):
    src = _copy_tokenizer(tiny_tokenizer_dir, tmp_path / "src")
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["600"] = {"content": "<pad>", "special": True}
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="'<pad>'=600"):
        extend_tokenizer(src, tmp_path / "out", expand_tokens_file=str(write_pieces(tmp_path / "p.jsonl", ["你"])))


def test_cli_train_corpus(tmp_path, tiny_tokenizer_dir, data_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "zh.txt").write_text((data_dir / "chinese.txt").read_text(encoding="utf-8"), encoding="utf-8")
    proc = run_script(["-m", MODULE, "--source_tokenizer_dir", tiny_tokenizer_dir, "--target_tokenizer_dir",
                       tmp_path / "out", "--train_corpus", corpus, "--num_new_pieces", "30"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "final vocabulary:           630" in proc.stdout and len(load_proto(tmp_path / "out").pieces) == 630
    (corpus / "bad.jsonl").write_text('{"text": "好"}\n{"text": 3}\n', encoding="utf-8")
    proc = run_script(["-m", MODULE, "--source_tokenizer_dir", tiny_tokenizer_dir, "--target_tokenizer_dir",
                       tmp_path / "out2", "--train_corpus", corpus, "--num_new_pieces", "30"], timeout=120)
    assert proc.returncode == 2 and "bad.jsonl:2:" in proc.stderr and "'text' must be a string" in proc.stderr
