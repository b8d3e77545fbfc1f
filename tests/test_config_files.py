"""A run described in a config file (YAML or JSON) plus command-line overrides, as LLaMA-Factory, axolotl and
torchtune users keep them; train.py's saved config_file.json replays the run."""
from __future__ import annotations

import json

import pytest

from colossal_llama2.training.args import parse_args
from colossal_llama2.utils.errors import UserInputError

YAML = """# a continual pre-training run
pretrained: /models/llama-3-8b-zh
dataset: [/data/arrow/part-00000, /data/arrow/part-00001]
plugin: zero2
lr: 1.0e-4
max_length: 2048
use_neft: true
use_grad_checkpoint: false
save_dir: /ckpt/run1
"""


def test_yaml_keys_are_flags_and_the_command_line_overrides(tmp_path):
    (tmp_path / "run.yaml").write_text(YAML)
    args = parse_args(["--config", str(tmp_path / "run.yaml"), "--lr", "3e-5", "--dataset", "/other"])
    assert args.pretrained == "/models/llama-3-8b-zh" and args.plugin == "zero2" and args.max_length == 2048
    assert args.lr == 3e-5 and args.dataset == ["/other"]  # overridden
    assert args.use_neft is True and args.use_grad_checkpoint is False
    assert args.tensorboard_dir == "/ckpt/run1/tensorboard"  # derived defaults follow the file's save_dir


def test_saved_config_file_replays_the_run(tmp_path):
    """What train.py writes (vars(args)) parses back to the same arguments."""
    original = parse_args(["--pretrained", "m", "--dataset", "d1", "d2", "--plugin", "ddp", "-s", "5",
                           "--grad_clip", "0.5", "--use_neft", "--save_dir", str(tmp_path / "ckpt")])
    (tmp_path / "config_file.json").write_text(json.dumps(vars(original), indent=2))
    replayed = parse_args(["--config", str(tmp_path / "config_file.json")])
    assert {k: v for k, v in vars(replayed).items() if k != "config"} == \
        {k: v for k, v in vars(original).items() if k != "config"}


@pytest.mark.parametrize("text, says", [
    ("pretrained: m\nlearning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("- a\n- b\n", "expected a mapping of flag names to values"),
    ("pretrained: [m\n", "not valid YAML"),
    ("use_neft: maybe\n", "use_neft: expected true or false"),
])
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, text, says):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserInputError) as err:
        parse_args(["--config", str(tmp_path / "bad.yaml"), "--dataset", "d"])
    assert err.value.where == str(tmp_path / "bad.yaml") and says in str(err.value)


def test_preparation_scripts_take_a_config_too(tmp_path):
    from colossal_llama2.dataset.prepare import build_arg_parser
    from colossal_llama2.utils.cli import parse_with_config

    (tmp_path / "prep.yaml").write_text("data_input_dirs: in\ntokenizer_dir: tok\ndata_arrow_output_dir: out\n"
                                        "max_length: 1024\nchat_template: project\n")
    args = parse_with_config(build_arg_parser("sft"), ["--config", str(tmp_path / "prep.yaml"), "--max_length", "512"])
    assert (args.tokenizer_dir, args.max_length, args.chat_template) == ("tok", 512, "project")


def test_the_example_configs_parse():
    from pathlib import Path

    from colossal_llama2.dataset.prepare import build_arg_parser
    from colossal_llama2.utils.cli import parse_with_config

    configs = Path(__file__).resolve().parents[1] / "examples" / "configs"
    assert parse_args(["--config", str(configs / "pretrain.yaml")]).lr == 1e-4
    assert parse_args(["--config", str(configs / "sft.yaml")]).accumulation_steps == 8
    assert parse_with_config(build_arg_parser("sft"), ["--config", str(configs / "prepare_sft.yaml")]).max_length == 4096
