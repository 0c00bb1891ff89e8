"""The layers hold: the core imports no step, application or report; a step imports only the
core and the formats; the formats import only the core. Read from the source (ast), so a lazy
import inside a function counts too."""

import ast
import os

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(path: str) -> set:
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] in ("pipeline", "components")}


def _modules(folder: str) -> list:
    found = []
    for dirpath, dirs, files in os.walk(os.path.join(PROJECT, folder)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    return sorted(found)


def _allowed(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(folder: str, allowed) -> list:
    return [
        f"{os.path.relpath(path, PROJECT)} imports {name}"
        for path in _modules(folder)
        for name in sorted(_imports(path))
        if not _allowed(name, allowed(path))
    ]


def test_the_core_imports_only_itself():
    assert _violations("pipeline/core", lambda path: ("pipeline.core",)) == []


def test_the_formats_import_only_the_core_and_themselves():
    assert _violations("pipeline/formats", lambda path: ("pipeline.core", "pipeline.formats")) == []


def test_a_step_imports_the_core_the_formats_and_its_own_package_only():
    def allowed(path):
        step = os.path.relpath(path, os.path.join(PROJECT, "components")).split(os.sep)[0]
        return ("pipeline.core", "pipeline.formats", f"components.{step}") if step != "__init__.py" else ()

    assert _violations("components", allowed) == []


@pytest.mark.parametrize("module", ["pipeline.core.runner", "pipeline.core.step"])
def test_the_checker_sees_an_import(module):
    """Control: the checker does find imports (a check that cannot fail is a defect)."""
    path = os.path.join(PROJECT, *module.split(".")) + ".py"
    assert any(n.startswith("pipeline.core") for n in _imports(path))
