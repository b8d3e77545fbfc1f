"""Compression table: numbers checked against a direct count; jsonl (source/target and text) and .txt input."""
from __future__ import annotations

import json

from tests.helpers.distributed import run_script
from tests.test_tokenizer import chinese_pieces, write_pieces

from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer


def test_stats_table(tmp_path, tiny_tokenizer_dir, chinese_lines, english_lines):
    from transformers import AutoTokenizer

    extended = tmp_path / "zh"
    extend_tokenizer(tiny_tokenizer_dir, extended, expand_tokens_file=str(
        write_pieces(tmp_path / "p.jsonl", chinese_pieces(chinese_lines))))
    data = tmp_path / "data"
    data.mkdir()
    (data / "pretrain.jsonl").write_text("".join(
        json.dumps({"source": line[:5], "target": line[5:], "category": "zh"}, ensure_ascii=False) + "\n"
        for line in chinese_lines), encoding="utf-8")
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in english_lines[:10]),
                                         encoding="utf-8")
    texts = chinese_lines + english_lines[:10]
    proc = run_script(["-m", "colossal_llama2.tokenizer.stats", "--tokenizer_dirs", f"{tiny_tokenizer_dir},{extended}",
                       "--data_input_dirs", f"{data},{tmp_path / 'more.jsonl'}"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    chars = sum(len(t) for t in texts)
    assert f"{len(texts)} samples, {chars} characters" in proc.stdout
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit():
            rows[cells[0]] = (int(cells[1]), float(cells[2]), float(cells[3]))
    for directory in (tiny_tokenizer_dir, extended):
        tok = AutoTokenizer.from_pretrained(str(directory))
        tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        assert rows[str(directory)] == (len(tok), round(tokens / chars, 3), round(tokens / len(texts), 3))
    assert rows[str(extended)][1] < rows[str(tiny_tokenizer_dir)][1] / 2


def test_stats_errors(tmp_path, tiny_tokenizer_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"title": "no text"}\n', encoding="utf-8")
    proc = run_script(["colossal_llama2/tokenizer/stats.py", "--tokenizer_dirs", tiny_tokenizer_dir,
                       "--data_input_dirs", bad], timeout=120)
    assert proc.returncode == 2 and f"{bad}:2:" in proc.stderr and "no 'text'" in proc.stderr
    proc = run_script(["colossal_llama2/tokenizer/stats.py", "--tokenizer_dirs", tmp_path / "none",
                       "--data_input_dirs", tmp_path / "missing"], timeout=120)
    assert proc.returncode == 2 and "--data_input_dirs" in proc.stderr


def test_stats_on_a_hand_counted_case(tmp_path):
    """A word-level tokenizer (one token per word): 'hello world' and 'a b c d' are 2 + 4 tokens over 11 + 7
    characters, so 6/18 = 0.333 tokens per character and 3.000 tokens per sample, vocabulary 7."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "a": 3, "b": 4, "c": 5, "d": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(tmp_path / "words"))
    (tmp_path / "t.txt").write_text("hello world\na b c d\n", encoding="utf-8")
    proc = run_script(["-m", "colossal_llama2.tokenizer.stats", "--tokenizer_dirs", tmp_path / "words",
                       "--data_input_dirs", tmp_path / "t.txt"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 samples, 18 characters" in proc.stdout
    assert f"| {tmp_path / 'words'} | 7 | 0.333 | 3.000 |" in proc.stdout
