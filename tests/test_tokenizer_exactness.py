"""Extended tokenizers: fast = slow = sentencepiece on every line, no dead pieces, exact ``--vocab_size``.

The source is LLaMA-2-like in the way that matters here: its whitespace-only pieces score -1e9, as LLaMA-2's
do, where float32 scores are 64 apart (appending pieces at "minimum - 1, - 2, ..." used to give runs of
equal scores, which the two BPE encoders order differently). The corpus is synthetic Chinese-like text
(tests/helpers/synthetic_text.py) with English, digits, odd whitespace, leading spaces and byte-fallback
characters; the test lines are other sentences of the same "language".
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from colossal_llama2.tokenizer import fast_file, sp_surgery
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.synthetic_text import SyntheticChinese
from colossal_llama2.utils.stack import transformers_5
from tests.helpers.slow import slow_tokenizer

SOURCE_SIZE = 1200
WHITESPACE_PIECES = ["▁" * n for n in (2, 3, 4, 8, 16)]
LEGACY = {"legacy-false": False, "legacy-true": True, "legacy-missing": None}
EDGE_TEXTS = [" it", "  two", " ", "▁x", " ▁x", "\n a", "\u3000\u3000你", "a\t\tb  ", "x  ", "", "12345 678",
              "<s>hi", "hi</s> there", " <s> x", "</s>\n"]


def _llama2_like_source(directory: Path, lines: list[str], legacy) -> Path:
    from colossal_llama2.tiny_base import save_llama_tokenizer, train_llama_like_sentencepiece

    proto = sp_pb2.ModelProto()
    proto.ParseFromString(train_llama_like_sentencepiece(lines, vocab_size=SOURCE_SIZE - len(WHITESPACE_PIECES)))
    present = {p.piece for p in proto.pieces}
    for piece in WHITESPACE_PIECES:  # LLaMA-2's runs of spaces, at its score
        assert piece not in present
        proto.pieces.add(piece=piece, score=-1e9, type=sp_surgery.NORMAL)
    save_llama_tokenizer(proto.SerializeToString(), directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if legacy is None:
        config.pop("legacy")
    else:
        config["legacy"] = legacy
    config_path.write_text(json.dumps(config, indent=2))
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "zh.txt"
    path.write_text("\n".join(SyntheticChinese(seed=0).lines(4000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def test_lines(english_lines) -> list[str]:
    return SyntheticChinese(seed=1).lines(2500) + english_lines + EDGE_TEXTS


@pytest.fixture(scope="module")
def piece_list(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pieces") / "pieces.jsonl"
    words = SyntheticChinese(seed=0).words[:2500]
    path.write_text("".join(json.dumps({"piece": w}, ensure_ascii=False) + "\n" for w in words), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=list(LEGACY))
def extended(request, tmp_path_factory, english_lines, chinese_lines, corpus, piece_list):
    """(source dir, {"learned": (dir, report), "list": (dir, report)}) for one ``legacy`` setting."""
    root = tmp_path_factory.mktemp(request.param)
    # English plus some Chinese characters (LLaMA-2 has ~700); the rest of Chinese is byte fallback.
    source = _llama2_like_source(root / "source", english_lines + chinese_lines, LEGACY[request.param])
    learned = root / "learned"
    learned_report = extend_tokenizer(source, learned, train_corpus=str(corpus), vocab_size=SOURCE_SIZE + 3000)
    listed = root / "list"
    list_report = extend_tokenizer(source, listed, expand_tokens_file=str(piece_list))
    return source, {"learned": (learned, learned_report), "list": (listed, list_report)}


@pytest.mark.parametrize("mode", ["learned", "list"])
def test_fast_slow_and_sentencepiece_agree_on_every_line(extended, mode, test_lines):
    from transformers import AutoTokenizer

    _, outputs = extended
    directory, _ = outputs[mode]
    slow = slow_tokenizer(directory)
    fast = AutoTokenizer.from_pretrained(str(directory))
    assert fast.is_fast
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    fast_ids = fast(test_lines, add_special_tokens=False)["input_ids"]
    disagree = [(line, slow.tokenize(line), fast.tokenize(line)) for line, ids in zip(test_lines, fast_ids)
                if slow.encode(line, add_special_tokens=False) != ids]
    assert disagree == [], disagree[:3]
    plain = [(line, ids) for line, ids in zip(test_lines, fast_ids) if "<" not in line]  # sentencepiece: no specials
    assert [line for line, ids in plain if sp.encode(line) != ids] == []
    assert [line for line in test_lines if slow.encode(line) != fast.encode(line)] == []  # with <s>
    assert sum(line.startswith(" ") for line in test_lines) > 50  # the case transformers' own conversion misses


@pytest.mark.parametrize("mode", ["learned", "list"])
def test_every_new_piece_is_produced_alone(extended, mode):
    from tokenizers import Tokenizer

    source, outputs = extended
    directory, report = outputs[mode]
    n_source = len(spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model")))
    proto = sp_pb2.ModelProto()
    proto.ParseFromString((directory / "tokenizer.model").read_bytes())
    new = [p.piece for p in proto.pieces[n_source:]]
    assert len(new) > 2000
    sp = sp_surgery.processor_without_dummy_prefix(proto)
    model = Tokenizer.from_file(str(directory / "tokenizer.json")).model
    for i, piece in enumerate(new, n_source):
        assert sp.encode(piece.replace("▁", " ")) == [i], piece
        assert [(t.value, t.id) for t in model.tokenize(piece)] == [(piece, i)], piece
    assert report.dropped_unreachable == [] and report.unreachable == []


def test_vocab_size_is_exact_in_both_modes(extended, piece_list, corpus, tmp_path):
    source, outputs = extended
    _, learned_report = outputs["learned"]
    assert learned_report.final_size == 4200
    assert len(spm.SentencePieceProcessor(model_file=str(outputs["learned"][0] / "tokenizer.model"))) == 4200
    # List mode: the list's order is its priority; what does not fit is what comes last.
    report = extend_tokenizer(source, tmp_path / "list", expand_tokens_file=str(piece_list), vocab_size=2048)
    assert report.final_size == 2048
    proto = sp_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "list" / "tokenizer.model").read_bytes())
    assert len(proto.pieces) == 2048
    words = [json.loads(line)["piece"] for line in piece_list.read_text(encoding="utf-8").splitlines()]
    present = {p.piece for p in proto.pieces}
    kept = [w in present for w in words]
    assert all(kept[:200]) and not all(kept)
    # Both sources together: the file's pieces first, then the corpus's, to exactly N.
    short = tmp_path / "short.jsonl"
    short.write_text("".join(piece_list.read_text(encoding="utf-8").splitlines(keepends=True)[:100]), encoding="utf-8")
    both = extend_tokenizer(source, tmp_path / "both", expand_tokens_file=str(short), train_corpus=str(corpus),
                            vocab_size=4096)
    assert both.final_size == 4096 and both.added_from_file == 100 and both.added_from_corpus > 1000


def test_vocab_size_refused_when_out_of_candidates_or_too_small(extended, tmp_path):
    source, _ = extended
    few = tmp_path / "few.jsonl"
    few.write_text('{"piece": "你好"}\n', encoding="utf-8")
    with pytest.raises(UserInputError, match="--vocab_size.*candidates ran out"):
        extend_tokenizer(source, tmp_path / "out", expand_tokens_file=str(few), vocab_size=5000)
    with pytest.raises(UserInputError, match="--vocab_size.*must exceed"):
        extend_tokenizer(source, tmp_path / "out", expand_tokens_file=str(few), vocab_size=100)
    with pytest.raises(UserInputError, match="not both"):
        extend_tokenizer(source, tmp_path / "out", expand_tokens_file=str(few), vocab_size=5000, num_new_pieces=3)
    assert not (tmp_path / "out").exists()


def test_piece_no_encoder_can_produce_is_left_out_and_reported(tmp_path, english_lines):
    """好 is a user-defined piece in this source: atomic, so no merge can build 你好 on top of it."""
    import io

    from colossal_llama2.tiny_base import save_llama_tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(english_lines), model_writer=model, model_type="bpe",
                                   vocab_size=600, byte_fallback=True, user_defined_symbols=["好"],
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   num_threads=1, minloglevel=2, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    source = save_llama_tokenizer(model.getvalue(), tmp_path / "src")
    pieces = tmp_path / "p.jsonl"
    pieces.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n"
                              for p in ["你好", "世界", "大家", "今天", "天气"]), encoding="utf-8")
    report = extend_tokenizer(source, tmp_path / "out", expand_tokens_file=str(pieces), vocab_size=611)
    assert report.dropped_unreachable == ["你好"] and report.unreachable == []
    assert any("never produced" in line and "你好" in line for line in report.lines())
    proto = sp_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "out" / "tokenizer.model").read_bytes())
    new = [p.piece for p in proto.pieces[600:]]
    assert len(proto.pieces) == 611 and "你好" not in new and {"世界", "大家", "今天", "天气"} <= set(new)


def test_scores_stay_distinct_in_float32_below_llama2_whitespace_pieces():
    proto = sp_pb2.ModelProto()
    proto.trainer_spec.model_type = sp_surgery.BPE
    for piece, score in [("a", -1.0), ("▁▁", -1e9)]:
        proto.pieces.add(piece=piece, score=score, type=sp_surgery.NORMAL)
    vocab = sp_surgery.Vocabulary.from_proto(proto)
    for i in range(500):
        vocab.add(f"p{i}")
    sp_surgery.append_to_proto(proto, vocab.appended)
    stored = np.array([p.score for p in proto.pieces[2:]], dtype=np.float32)  # float32, as serialized
    assert stored.max() < np.float32(-1e9) and np.all(np.diff(stored) < 0)


def test_stale_tokenizer_json_is_refused(extended, tmp_path):
    """init_model copies an extended tokenizer's tokenizer.json on to the model; one of another vocabulary is refused."""
    from colossal_llama2.tokenizer import hf_files

    _, outputs = extended
    directory, report = outputs["list"]
    hf_files.check_fast_file_matches(directory, report.final_size, "--target_tokenizer_path")
    stale = tmp_path / "tok"
    shutil.copytree(directory, stale)
    (stale / fast_file.FAST_FILE).write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    with pytest.raises(UserInputError, match="tokenizer.json has 1 pieces"):
        hf_files.check_fast_file_matches(stale, report.final_size, "--target_tokenizer_path")


@pytest.mark.skipif(transformers_5(), reason="transformers 5 has no slow LlamaTokenizer to convert")
@pytest.mark.parametrize("mode", ["learned", "list"])
def test_the_written_pipeline_is_transformers_4s_conversion(extended, mode):
    """tokenizer.json is built from tokenizer.model by the project (transformers 5 cannot convert it exactly); under
    transformers 4 it equals transformers' own LLaMA conversion before the leading-space fix."""
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    source, outputs = extended
    directory, _ = outputs[mode]
    config = json.loads((source / "tokenizer_config.json").read_text())
    for tokenizer_dir in (source, directory):
        spec, legacy = fast_file.converted_spec(tokenizer_dir, config)
        expected = json.loads(convert_slow_tokenizer(LlamaTokenizer.from_pretrained(str(tokenizer_dir))).to_str())
        assert legacy == (config.get("legacy") is not False)
        assert spec == expected


def test_the_sentencepiece_reference_is_the_slow_tokenizer(extended, test_lines):
    """The reference transformers 5 tests compare against (tests/helpers/slow.py) equals transformers 4's slow
    LlamaTokenizer, special tokens inside the text included."""
    if transformers_5():
        pytest.skip("transformers 5 has no slow LlamaTokenizer")
    from transformers import LlamaTokenizer

    from tests.helpers.slow import SentencePieceReference

    source, outputs = extended
    for directory in (source, outputs["list"][0]):
        slow, reference = LlamaTokenizer.from_pretrained(str(directory)), SentencePieceReference(directory)
        lines = test_lines[::5] + EDGE_TEXTS
        assert [line for line in lines if reference.encode(line) != slow.encode(line)] == []
