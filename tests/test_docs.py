"""The docs name the flags the scripts have: every flag of train.py and the preparation/tokenizer scripts is
documented, and every flag the docs show exists (a renamed or removed flag fails here, not in a user's script)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*")


def parser_flags(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")} - {"--help"}


def doc_flags(*names: str) -> set[str]:
    return set(FLAG.findall("\n".join((REPO / n).read_text(encoding="utf-8") for n in names)))


def test_every_train_flag_is_documented_and_every_documented_one_exists():
    from colossal_llama2.training.args import build_parser

    flags = parser_flags(build_parser())
    documented = doc_flags("docs/training.md")
    assert flags - documented == set(), "train.py flags missing from docs/training.md"
    from colossal_llama2.model.init_model import build_parser as model_parser

    from colossal_llama2.plan import build_parser as plan_parser

    known = flags | parser_flags(_prepare_parser("pretrain")) | parser_flags(_prepare_parser("sft")) | parser_flags(
        model_parser()) | parser_flags(plan_parser())
    assert documented - known - OTHER_TOOLS_FLAGS == set(), "docs/training.md names flags no command has"


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_preparation_flags_are_documented(kind):
    flags = parser_flags(_prepare_parser(kind))
    assert flags - doc_flags("docs/data_preparation.md", "README.md") == set()


def test_tokenizer_and_model_flags_are_documented():
    from colossal_llama2.model.init_model import build_parser as model_parser
    from colossal_llama2.tokenizer.init_tokenizer import build_parser as tokenizer_parser

    documented = doc_flags("docs/tokenizer_and_model.md")
    for parser in (tokenizer_parser(), model_parser()):
        assert parser_flags(parser) - documented == set()


def test_readme_commands_use_only_existing_flags():
    from colossal_llama2.model.init_model import build_parser as model_parser
    from colossal_llama2.tokenizer.init_tokenizer import build_parser as tokenizer_parser
    from colossal_llama2.training.args import build_parser

    known = (parser_flags(build_parser()) | parser_flags(_prepare_parser("pretrain")) | parser_flags(_prepare_parser("sft"))
             | parser_flags(tokenizer_parser()) | parser_flags(model_parser()) | _inference_flags() | OTHER_TOOLS_FLAGS
             | parser_flags(_plan_parser()))
    assert doc_flags("README.md") - known == set()


def _plan_parser():
    from colossal_llama2.plan import build_parser

    return build_parser()


def _prepare_parser(kind: str):
    from colossal_llama2.dataset.prepare import build_arg_parser

    return build_arg_parser(kind)


# Flags of the other commands the docs show: the launchers (torchrun, colossalai run), the benchmarks, the
# tokenizer stats, the chat example, pip's --no-deps/--no-index (read as --no).
OTHER_TOOLS_FLAGS = {"--nproc_per_node", "--master_port", "--master_addr", "--hostfile", "--nproc", "--peers", "--variant",
                     "--shape", "--shapes", "--tokenizer_dirs", "--no", "--chat", "--system"}


def _inference_flags() -> set[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("inference_example", REPO / "inference_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return parser_flags(module.build_parser())
