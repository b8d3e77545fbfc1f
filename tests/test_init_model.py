"""Embedding growth: old rows bit-identical, new rows by mean / subword_mean, padding, tied/untied, step-0 logits."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from colossal_llama2.model.init_model import init_model
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.errors import UserInputError
from tests.helpers import sp_bpe
from tests.helpers.distributed import run_script
from tests.test_tokenizer import chinese_pieces, load_proto, write_pieces

SCRIPT = "colossal_llama2/model/init_model.py"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
N_SRC = 600


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def expected_new_rows(source_weight: torch.Tensor, source_dir: Path, target_tok: Path, method: str) -> torch.Tensor:
    """Computed independently of the implementation: float64 means, each piece's ids under the source by a
    plain-Python sentencepiece-BPE encoder (tests/helpers/sp_bpe.py), not sentencepiece itself."""
    new_pieces = [p.piece for p in load_proto(target_tok).pieces[N_SRC:]]
    old = source_weight[:N_SRC].double()
    if method == "mean":
        return old.mean(0).expand(len(new_pieces), -1)
    source = [(p.piece, p.score, p.type) for p in load_proto(source_dir).pieces]
    return torch.stack([old[sp_bpe.encode(source, p)].mean(0) for p in new_pieces])


@pytest.fixture(scope="module")
def target_tok(tmp_path_factory, tiny_tokenizer_dir, chinese_lines) -> Path:
    tmp = tmp_path_factory.mktemp("zh_tok")
    extend_tokenizer(tiny_tokenizer_dir, tmp / "tok",
                     expand_tokens_file=str(write_pieces(tmp / "p.jsonl", chinese_pieces(chinese_lines))))
    return tmp / "tok"


@pytest.fixture(scope="module")
def n_tgt(target_tok) -> int:
    return len(load_proto(target_tok).pieces)


@pytest.fixture(scope="module")
def padded_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The untied tiny model with config.vocab_size 640 > 600 tokenizer pieces (rows 600..639 random padding)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("padded_model")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.resize_token_embeddings(640, mean_resizing=False)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(tiny_model_dir) / name, out / name)
    return out


def logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("method", ["mean", "subword_mean"])
def test_rows_grown_and_initialised(tmp_path, tiny_model_dir, tiny_tied_model_dir, target_tok, n_tgt, method, tied):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tiny_tied_model_dir if tied else tiny_model_dir
    report = init_model(source, target_tok, tmp_path / "out", init_method=method)
    assert (report.tied, report.new_vocab_size, report.target_tokenizer_size) == (tied, n_tgt, n_tgt)
    src_w, new_w = weights(source), weights(tmp_path / "out")
    names = ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"])
    if tied:
        assert "lm_head.weight" not in new_w
    for name in names:
        assert new_w[name].shape == (n_tgt, src_w[name].shape[1])
        assert torch.equal(new_w[name][:N_SRC], src_w[name])  # bit-identical
        want = expected_new_rows(src_w[name], source, target_tok, method)
        torch.testing.assert_close(new_w[name][N_SRC:].double(), want, atol=1e-6, rtol=1e-5)
    if method == "subword_mean":  # rows differ per piece, unlike the single shared mean
        assert not torch.allclose(new_w[names[0]][N_SRC], new_w[names[0]][N_SRC + 1])
    for name in TOKENIZER_FILES:
        assert (tmp_path / "out" / name).read_bytes() == (target_tok / name).read_bytes()
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert model.config.vocab_size == n_tgt == len(AutoTokenizer.from_pretrained(str(tmp_path / "out")))
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == tied


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_step0_logits_over_old_vocabulary_unchanged(tmp_path, tiny_model_dir, tiny_tied_model_dir, target_tok,
                                                    english_lines, tied):
    """On text with no new pieces, the grown model predicts exactly what the source did over the old ids."""
    from transformers import AutoTokenizer

    source = tiny_tied_model_dir if tied else tiny_model_dir
    init_model(source, target_tok, tmp_path / "out", init_method="subword_mean", pad_to_multiple_of=64)
    ids = AutoTokenizer.from_pretrained(str(tmp_path / "out")).encode(" ".join(english_lines[:3]))
    assert ids == AutoTokenizer.from_pretrained(str(source)).encode(" ".join(english_lines[:3]))
    old, new = logits(source, ids), logits(tmp_path / "out", ids)
    assert new.shape[1] % 64 == 0 and new.shape[1] > old.shape[1]
    torch.testing.assert_close(new[:, :N_SRC], old, atol=1e-5, rtol=0)


def test_padded_source_and_pad_to_multiple(tmp_path, padded_model_dir, target_tok, n_tgt, english_lines):
    """Source rows 600..639 are padding: new pieces take ids from 600 on; padding rows of the result hold the mean."""
    report = init_model(padded_model_dir, target_tok, tmp_path / "out", init_method="mean", pad_to_multiple_of=64)
    size = -(-n_tgt // 64) * 64
    assert (report.source_config_vocab, report.new_vocab_size) == (640, size)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == size
    src_w, new_w = weights(padded_model_dir), weights(tmp_path / "out")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert new_w[name].shape[0] == size
        assert torch.equal(new_w[name][:N_SRC], src_w[name][:N_SRC])
        mean = src_w[name][:N_SRC].double().mean(0)  # the source's own padding rows are not part of the mean
        torch.testing.assert_close(new_w[name][N_SRC:].double(), mean.expand(size - N_SRC, -1), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(new_w[name][N_SRC:640], src_w[name][N_SRC:640])  # old padding not reused
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(padded_model_dir)).encode(english_lines[0])
    torch.testing.assert_close(logits(tmp_path / "out", ids)[:, :N_SRC], logits(padded_model_dir, ids)[:, :N_SRC],
                               atol=1e-5, rtol=0)


def test_bf16_kept_sharded_and_into_tokenizer_dir(tmp_path, tiny_tokenizer_dir, target_tok):
    """Source dtype kept, shards + index written; upstream's 'model dir = tokenizer dir' usage works."""
    from colossal_llama2.tiny_base import build_tiny_llama

    source = build_tiny_llama(tiny_tokenizer_dir, tmp_path / "bf16", torch_dtype="bfloat16")
    out = tmp_path / "tok_and_model"
    shutil.copytree(target_tok, out)
    init_model(source, out, out, init_method="subword_mean", max_shard_size="60KB")
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    src_w, new_w = weights(source), weights(out)
    assert all(t.dtype == torch.bfloat16 for t in new_w.values())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(new_w[name][:N_SRC], src_w[name])
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"  # transformers 5 calls it dtype
    assert (out / "tokenizer.model").read_bytes() == (target_tok / "tokenizer.model").read_bytes()


def test_refuses_tokenizer_that_does_not_extend(tmp_path, tiny_model_dir, data_dir):
    from colossal_llama2.tiny_base import build_tiny_tokenizer

    other = build_tiny_tokenizer([data_dir / "english.txt", data_dir / "chinese.txt"], tmp_path / "other", 1000)
    with pytest.raises(UserInputError, match="does not extend the source tokenizer: id \\d+ is"):
        init_model(tiny_model_dir, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- command line


def test_cli_file_form(tmp_path, tiny_model_dir, target_tok, n_tgt):
    proc = run_script([SCRIPT, "--source_model_and_tokenizer_path", tiny_model_dir, "--target_tokenizer_path",
                       target_tok, "--target_model_path", tmp_path / "out", "--pad_to_multiple_of", "64"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert f"target: tokenizer {n_tgt} pieces, config.vocab_size {-(-n_tgt // 64) * 64}" in proc.stdout
    assert "embeddings untied" in proc.stdout and "peak memory (RSS)" in proc.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_cli_errors(tmp_path, tiny_model_dir, tiny_tokenizer_dir, target_tok):
    def run(*args):
        return run_script(["-m", "colossal_llama2.model.init_model", *map(str, args)], timeout=180)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    proc = run("--source_model_and_tokenizer_path", tiny_model_dir, "--target_tokenizer_path", target_tok,
               "--target_model_path", busy)
    assert proc.returncode == 2 and "--target_model_path" in proc.stderr and "--overwrite" in proc.stderr
    # A tokenizer dir is not a model dir (no config.json).
    proc = run("--source_model_and_tokenizer_path", tiny_tokenizer_dir, "--target_tokenizer_path", target_tok,
               "--target_model_path", tmp_path / "o1")
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    # Missing target tokenizer; a target tokenizer that lacks one of the source's pieces.
    proc = run("--source_model_and_tokenizer_path", tiny_model_dir, "--target_tokenizer_path", tmp_path / "missing",
               "--target_model_path", tmp_path / "o2")
    assert proc.returncode == 2 and "--target_tokenizer_path" in proc.stderr
    short = tmp_path / "short"
    short.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(tiny_tokenizer_dir) / name, short / name)
    proto = load_proto(short)
    del proto.pieces[-1]
    (short / "tokenizer.model").write_bytes(proto.SerializeToString())
    proc = run("--source_model_and_tokenizer_path", tiny_model_dir, "--target_tokenizer_path", short,
               "--target_model_path", tmp_path / "o3")
    assert proc.returncode == 2 and "does not extend the source tokenizer" in proc.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
