"""Every command-line flag's help renders: argparse formats each help text with ``%`` (``%(default)s``), so a bare
``1%`` in it breaks ``--help`` (``% o`` raises) or prints a dict into it (``% a``)."""
from __future__ import annotations

import ast
import re

import pytest

from tests.helpers.distributed import REPO_ROOT

SOURCES = sorted(p for folder in ("colossal_llama2", "benchmarks", "scripts") for p in (REPO_ROOT / folder).rglob("*.py"))
SOURCES += sorted(REPO_ROOT.glob("*.py"))
# what argparse puts into the mapping it formats help with (the action's attributes and the program name)
HELP_PARAMS = {"prog": "prog", "default": "D", "dest": "dest", "type": "T", "choices": "C", "metavar": "M",
               "required": False, "nargs": None, "const": None, "option_strings": [], "help": "H"}


def literal_text(node: ast.expr) -> str | None:
    """A help argument's text: a string constant, or an f-string's literal parts (its fields as ``X``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "X" for part in node.values)
    return None


def help_texts() -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    text = literal_text(keyword.value) if keyword.arg == "help" else None
                    if text is not None:
                        found.append((f"{path.relative_to(REPO_ROOT)}:{node.lineno}", text))
    return found


def test_every_help_text_survives_argparse_formatting():
    texts = help_texts()
    assert len(texts) > 150  # the scan finds the flags (train.py alone has dozens)
    bad = []
    for where, text in texts:
        try:
            rendered = text % HELP_PARAMS
        except (TypeError, ValueError, KeyError) as err:
            bad.append(f"{where}: {err}")
            continue
        # without a %(name)s field, formatting must only turn %% into %: anything else was a bare % sign
        if "%(" not in text and rendered != text.replace("%%", "%"):
            bad.append(f"{where}: a bare % changes the text")
    assert not bad, bad


def test_train_help_renders_with_its_percent_signs():
    from colossal_llama2.training.args import build_parser

    text = build_parser().format_help()
    assert "--fp8" in text and re.search(r"within 1% of bf16", text.replace("\n", " ").replace("  ", " "))
    assert "{'" not in text


@pytest.mark.parametrize("text, ok", [("within 1% of", False), ("within 1%% of", True), ("+0.4% at 16", False),
                                      ("default %(default)s", True)])
def test_the_check_tells_a_bare_percent(text, ok):
    try:
        rendered = text % HELP_PARAMS
        passed = "%(" in text or rendered == text.replace("%%", "%")
    except (TypeError, ValueError):
        passed = False
    assert passed is ok
