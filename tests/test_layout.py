"""The package's layout as an import graph: no import circle, lower layers never import higher ones, and
training/'s wings (plugins/, kernels/, checkpoint/, lifecycle/) never import the loop and its parts above them."""
from __future__ import annotations

import pytest

import ast
from pathlib import Path

pytestmark = pytest.mark.stack_neutral  # CI runs it on the default transformers stack only

PACKAGE = Path(__file__).resolve().parents[1] / "colossal_llama2"
WINGS = ("plugins", "kernels", "checkpoint", "lifecycle")
# Each layer may import only the layers before it in this list (and itself).
LAYERS = ("utils", "tokenizer", "dataset", "model", "training")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at the top or inside a function."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != own}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return result


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_circle_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, targets in import_graph().items():
        layer = module.split(".")[1] if module.count(".") else None
        if layer not in LAYERS:
            continue
        allowed = {f"colossal_llama2.{name}" for name in LAYERS[:LAYERS.index(layer) + 1]}
        wrong += [f"{module} -> {t}" for t in targets
                  if t != "colossal_llama2" and not any(t == a or t.startswith(a + ".") for a in allowed)]
    assert wrong == []


def test_wings_never_import_the_loop_or_another_wing():
    wrong = []
    for module, targets in import_graph().items():
        parts = module.split(".")
        if len(parts) < 4 or parts[1] != "training" or parts[2] not in WINGS:
            continue
        own_wing = ".".join(parts[:3])
        wrong += [f"{module} -> {t}" for t in targets
                  if t.startswith("colossal_llama2.training") and not t.startswith(own_wing)]
    assert wrong == []


def test_every_wing_is_a_folder_of_modules():
    training = PACKAGE / "training"
    for wing in WINGS:
        assert (training / wing / "__init__.py").is_file()
        assert len(list((training / wing).glob("*.py"))) > 1
    top_level = sorted(p.stem for p in training.glob("*.py") if p.stem != "__init__")
    assert not set(top_level) & {"plugins", "checkpoint", "fused_ops", "zero_speed", "launcher", "signals"}
