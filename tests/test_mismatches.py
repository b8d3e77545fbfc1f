"""Inputs that belong to different models are refused before step 1, with one line naming both."""
from __future__ import annotations

import logging

import pytest

from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.utils.errors import UserInputError
from tests.test_prepare_pretrain import make_records, options, write_jsonl

import train as train_script


def prepared(tmp_path, tokenizer_dir, english_lines, chinese_lines, name="data"):
    root = tmp_path / name
    write_jsonl(root / "in" / "a.jsonl", make_records(english_lines, chinese_lines)[:20])
    prepare(options(root, tokenizer_dir, root / "in", max_length=64, num_spliced_dataset_bins=1))
    return root / "arrow"


def validate(monkeypatch, tmp_path, model_dir, dataset, *extra):
    from colossal_llama2.training.args import parse_args
    from colossal_llama2.training.validation import validate_inputs

    monkeypatch.setenv("WORLD_SIZE", "1")
    args = parse_args(["--pretrained", str(model_dir), "--dataset", str(dataset), "--plugin", "ddp", "--max_length",
                       "64", "--save_dir", str(tmp_path / "ckpt"), "--tensorboard_dir", str(tmp_path / "tb"),
                       "--config_file", str(tmp_path / "c.json"), *map(str, extra)])
    return validate_inputs(args, cuda=False, world_size=1)


def test_data_from_another_tokenizer_is_refused_naming_both(monkeypatch, tmp_path, tiny_tokenizer_dir,
                                                            llama3_tokenizer_dir, english_lines, chinese_lines):
    """Data prepared with a 600-piece sentencepiece tokenizer under a model whose tokenizer is a byte-level one of
    1,005 tokens: the data's vocabulary fits the embedding, so only the digest tells them apart."""
    from colossal_llama2.tiny_base import build_tiny_family_model

    model = build_tiny_family_model("llama3", llama3_tokenizer_dir, tmp_path / "model")
    data = prepared(tmp_path, tiny_tokenizer_dir, english_lines, chinese_lines)
    with pytest.raises(UserInputError) as err:
        train_script.main(["--pretrained", str(model), "--dataset", str(data), "--plugin", "ddp", "--max_length",
                           "64", "--save_dir", str(tmp_path / "ckpt"), "--config_file", str(tmp_path / "c.json")])
    message = str(err.value)
    assert err.value.where == "--dataset" and "another tokenizer" in message
    assert str(tiny_tokenizer_dir.resolve()) in message and str(model) in message
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "c.json").exists()
    with pytest.raises(UserInputError, match="--eval_dataset: prepared with another tokenizer"):
        validate(monkeypatch, tmp_path, model, prepared(tmp_path, llama3_tokenizer_dir, english_lines, chinese_lines,
                                                        "same"), "--eval_dataset", data)


def test_the_same_tokenizer_passes_and_the_override_warns(monkeypatch, tmp_path, tiny_tokenizer_dir, tiny_model_dir,
                                                          llama3_tokenizer_dir, english_lines, chinese_lines, caplog):
    from colossal_llama2.tiny_base import build_tiny_family_model

    validate(monkeypatch, tmp_path, tiny_model_dir, prepared(tmp_path, tiny_tokenizer_dir, english_lines,
                                                             chinese_lines))
    model = build_tiny_family_model("llama3", llama3_tokenizer_dir, tmp_path / "model")
    with caplog.at_level(logging.WARNING):
        validate(monkeypatch, tmp_path, model, tmp_path / "data" / "arrow", "--allow_tokenizer_mismatch")
    assert "training anyway (--allow_tokenizer_mismatch)" in caplog.text


def test_parts_without_a_digest_warn(monkeypatch, tmp_path, tiny_tokenizer_dir, tiny_model_dir, caplog):
    from tests.scripts.fixture_dataset import build_dataset

    data = build_dataset(tiny_tokenizer_dir, tmp_path / "old", max_length=64, num_parts=1)
    with caplog.at_level(logging.WARNING):
        validate(monkeypatch, tmp_path, tiny_model_dir, data)
    assert "prepared before tokenizer digests were recorded" in caplog.text


def test_real_tokenizers_of_two_families_differ_and_one_is_stable(tmp_path):
    """Qwen3's and LLaMA-3.1's real tokenizers have different digests; a copy of one has the same."""
    import shutil

    from transformers import AutoTokenizer

    from colossal_llama2.tokenizer.identity import tokenizer_digest
    from tests.helpers.registry import tokenizer_dir

    qwen3, llama3 = tokenizer_dir("minicpm_v4_5"), tokenizer_dir("llama3_1")
    shutil.copytree(llama3, tmp_path / "copy")
    digests = [tokenizer_digest(AutoTokenizer.from_pretrained(str(d))) for d in (qwen3, llama3, tmp_path / "copy")]
    assert digests[0] != digests[1] == digests[2]


@pytest.mark.parametrize("change, field", [({"hidden_size": 96, "intermediate_size": 192}, "hidden_size"),
                                           ({"num_hidden_layers": 3}, "num_hidden_layers"),
                                           ({"tie_word_embeddings": True}, "tie_word_embeddings")])
def test_resuming_another_model_is_refused_naming_the_field(monkeypatch, tmp_path, tiny_tokenizer_dir, tiny_model_dir,
                                                            change, field):
    """A checkpoint of the tiny model, resumed into a model of another width, depth or tying: one line before
    any step (a full checkpoint and a modeling/ dir alike), whatever the plugin."""
    import json
    import shutil

    from colossal_llama2.tiny_base import build_tiny_llama
    from tests.scripts.fixture_dataset import build_dataset

    checkpoint = tmp_path / "ckpt" / "epoch-0_step-2"
    shutil.copytree(tiny_model_dir, checkpoint / "modeling")
    (checkpoint / "running_states.json").write_text("{}")
    shape = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "tie_word_embeddings": False}
    other = build_tiny_llama(tiny_tokenizer_dir, tmp_path / "other", **{**shape, **change})
    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    for target in (checkpoint, checkpoint / "modeling"):
        with pytest.raises(UserInputError) as err:
            validate(monkeypatch, tmp_path, other, data, "--load_checkpoint", target)
        saved = json.loads((checkpoint / "modeling" / "config.json").read_text())[field]
        assert err.value.where == "--load_checkpoint"
        assert f"its {field} is {saved}, --pretrained's is {({**shape, **change})[field]}" in str(err.value)
    validate(monkeypatch, tmp_path, tiny_model_dir, data, "--load_checkpoint", checkpoint)  # the same model passes


class _RunsCode:
    """Pickles to a call of print (a stand-in for any code): loading it with plain pickle would run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (print, (f"CODE RAN {self.marker}",))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path, capsys):
    """Low-memory optimizer states (rank-RRRRR.pt) and colossalai's optimizer/scheduler files load weights_only:
    a file holding anything but tensors and plain values is refused with one line, and nothing runs."""
    import torch

    from colossal_llama2.training.checkpoint.directory import weights_only_loads
    from colossal_llama2.training.checkpoint.optimizer_states import read_tensors

    path = tmp_path / "rank-00000.pt"
    torch.save({"world_size": 1, "state_dict": {"state": {0: _RunsCode("rank file")}}}, path)
    with pytest.raises(UserInputError, match="--load_checkpoint: .*rank-00000.pt holds more than tensors"):
        read_tensors(path)
    torch.save({"state": {"exp_avg": torch.ones(3)}, "param_groups": [{"lr": 0.1, "params": [0]}]}, path)
    assert read_tensors(path)["state"]["exp_avg"].tolist() == [1.0, 1.0, 1.0]
    scheduler = tmp_path / "lr_scheduler"
    torch.save({"last_epoch": 3, "hook": _RunsCode("scheduler")}, scheduler)
    with weights_only_loads(), pytest.raises(Exception):
        torch.load(scheduler)  # what colossalai's load_lr_scheduler calls, with torch's default weights_only
    assert "CODE RAN" not in capsys.readouterr().out
