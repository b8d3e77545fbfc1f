"""The docs name the flags the scripts have: every flag of train.py and the preparation/tokenizer scripts is
documented, and every flag the docs show exists (a renamed or removed flag fails here, not in a user's script)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack_neutral  # CI runs it on the default transformers stack only

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
# tokenizer stats, the chat example, pip's --no-deps/--no-index (read as --no), colossalai run's --ssh-port (read as
# --ssh), the GPU equivalence script's --offload.
OTHER_TOOLS_FLAGS = {"--nproc_per_node", "--master_port", "--master_addr", "--hostfile", "--nproc", "--peers", "--variant",
                     "--shape", "--shapes", "--tokenizer_dirs", "--no", "--chat", "--system", "--offload", "--ssh"}


def _inference_flags() -> set[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("inference_example", REPO / "inference_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return parser_flags(module.build_parser())


# --- flags in every doc and example script -------------------------------------------------------------------

DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
EXAMPLE_SCRIPTS = ["train.example.sh", "train_sft.example.sh"]


def _benchmark_flags() -> set[str]:
    """The flags of the benchmark scripts and the package's other commands, read from their argparse calls."""
    found = set()
    for path in [*(REPO / "benchmarks").glob("*.py"), *(REPO / "colossal_llama2").rglob("*.py")]:
        found |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9_]*)\"", path.read_text(encoding="utf-8")))
    return found


def all_known_flags() -> set[str]:
    from colossal_llama2.model.init_model import build_parser as model_parser
    from colossal_llama2.tokenizer.init_tokenizer import build_parser as tokenizer_parser
    from colossal_llama2.training.args import build_parser

    return (parser_flags(build_parser()) | parser_flags(_prepare_parser("pretrain")) | parser_flags(_prepare_parser("sft"))
            | parser_flags(tokenizer_parser()) | parser_flags(model_parser()) | _inference_flags()
            | parser_flags(_plan_parser()) | _benchmark_flags() | OTHER_TOOLS_FLAGS | {"--torchrun", "--data_input_dirs"})


@pytest.mark.parametrize("name", DOCS + EXAMPLE_SCRIPTS)
def test_every_flag_a_doc_or_example_names_exists(name):
    assert doc_flags(name) - all_known_flags() == set(), f"{name} names flags no command has"


def test_a_made_up_flag_is_caught(tmp_path):
    assert "--use_flash_attention_3" not in all_known_flags()
    assert FLAG.findall("train.py --use_flash_attention_3 --plugin zero2") == ["--use_flash_attention_3", "--plugin"]


# --- figures stated in more than one place ---------------------------------------------------------------------

GPU_SPEED = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+)(?=(?:\s*->\s*\d{1,3}(?:,\d{3})+)?[^\d]{0,40}?tokens/s)")


def _results_table_speeds() -> set[str]:
    """tokens/s/GPU of every row of docs/benchmarks.md's results tables: where GPU speeds are stated once."""
    speeds = set()
    for line in (REPO / "docs/benchmarks.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d{1,3}(,\d{3})*", cells[3]):
            speeds.add(cells[3])
    return speeds


def _prose(text: str) -> list[str]:
    """Table rows, and paragraphs with their line breaks joined (a figure and its unit may sit on two lines)."""
    units = []
    for block in re.split(r"\n\s*\n", text):
        units += block.splitlines() if block.lstrip().startswith("|") else [re.sub(r"\s*\n\s*", " ", block)]
    return units


def stated_gpu_speeds(text: str) -> set[str]:
    return {n for unit in _prose(text) if not re.match(r"\|\s*`", unit) for n in GPU_SPEED.findall(unit)}


def test_gpu_speeds_anywhere_are_the_results_tables():
    table = _results_table_speeds()
    assert {"8,231", "20,358", "23,517", "4,729", "1,774"} <= table
    for name in DOCS:
        stray = stated_gpu_speeds((REPO / name).read_text(encoding="utf-8")) - table
        assert stray == set(), f"{name} states tokens/s figures that are not in docs/benchmarks.md's results: {stray}"


def test_a_speed_stated_differently_is_caught():
    assert stated_gpu_speeds("| more memory | `--micro_batch_size 2` | +15% (20,507 -> 23,517 tokens/s) |") == {
        "20,507", "23,517"}
    assert stated_gpu_speeds("trains at 4,729\ntokens/s with adamw_bf16 on a 69,104-token vocabulary") == {"4,729"}


def test_model_sizes_are_the_shapes_parameter_counts():
    from tests.test_plugin_choice import shape

    text = re.sub(r"\s+", " ", (REPO / "docs/benchmarks.md").read_text(encoding="utf-8"))
    stated = dict(re.findall(r"`(\w+)` = [^()]*?\((\d+\.\d+) B[;)]", text))
    stated.update(re.findall(r"`(\w+)` = its layers, \d+ deep \((\d+\.\d+) B\)", text))
    stated.update(re.findall(r"`(\w+)` \d+ deep \((\d+\.\d+) B\)", text))
    assert set(stated) == {"llama3_8b", "qwen2_7b", "7b", "7b_16l", "7b_8l", "13b"}
    for name, billions in stated.items():
        decimals = len(billions.split(".")[1])
        assert billions == f"{shape(name).params / 1e9:.{decimals}f}", name


def test_the_planner_error_band_is_the_measured_one_everywhere():
    import math

    from tests.test_plugin_choice import GIB, MEASURED, shape

    from colossal_llama2.training.plugins.choice import estimate_peak_bytes

    errors = []
    for name, plugin, gpus, micro_batch, ckpt, peak_gib in MEASURED:
        plugin, _, optimizer = plugin.partition(":")
        estimate = estimate_peak_bytes(plugin, shape(name), gpus=gpus, tokens_per_micro_batch=4096 * micro_batch,
                                       grad_checkpoint=ckpt, optimizer=optimizer or "adamw")
        errors.append(100 * (estimate / (peak_gib * GIB) - 1))
    band = (math.floor(min(errors)), math.ceil(max(errors)))
    sources = {name: (REPO / name).read_text(encoding="utf-8") for name in DOCS}
    sources["choice.py"] = (REPO / "colossal_llama2/training/plugins/choice.py").read_text(encoding="utf-8")
    stated = {(name, (int(low), int(high))) for name, text in sources.items()
              for low, high in re.findall(r"within -(\d+)% to \+(\d+)%", text)}
    assert len(stated) >= 3
    assert {b for _, b in stated} == {(-band[0], band[1])}, (band, stated)
