"""Cache keys: a step's code, parameters, input fingerprints and library versions, hashed."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

# Libraries whose version changes what a step produces.
_STACK = (
    "tensorflow",
    "tensorflow-data-validation",
    "tensorflow-model-analysis",
    "tfx-bsl",
    "apache-beam",
    "pyarrow",
    "numpy",
)


@cache
def stack_versions() -> tuple:
    """(name, version) of the libraries that shape outputs; 'missing' when not installed."""
    versions = []
    for name in _STACK:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, "missing"))
    return tuple(versions)


def _module_files(module_name: str) -> list:
    """The source files of a module, or of every module below a package; [] when not found."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    if not spec.submodule_search_locations:
        return [spec.origin]
    files = []
    for dirpath, dirs, names in os.walk(list(spec.submodule_search_locations)[0]):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py")]
    return files


def _imported_names(path: str, package: str) -> set[str]:
    """Every module name a source file imports, at any depth of the file (lazy imports too).

    `from a.b import c` yields both "a.b" and "a.b.c" (c may be a module); relative imports are
    resolved against `package`, the file's own package.
    """
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in parts + [base] if p)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n}


def _package_of(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel.rpartition(".")[0]


def _project_root(module_name: str) -> str:
    """The directory holding the top-level package (or module) of `module_name`."""
    top = importlib.util.find_spec(module_name.split(".")[0])
    if top is not None and top.submodule_search_locations:
        return os.path.dirname(os.path.realpath(list(top.submodule_search_locations)[0]))
    if top is None or top.origin is None:
        raise ModuleNotFoundError(f"cannot fingerprint module {module_name!r}: not found")
    return os.path.dirname(os.path.realpath(top.origin))


def project_files(module_names) -> list:
    """Source files of `module_names` and of every project module they import, transitively.

    The project is every top-level package that sits in the same directory as the first
    module's top-level package (here `pipeline/` and `components/`); installed libraries are
    not followed (their versions are in `stack_versions`). Parent packages' `__init__.py` count,
    since importing a module runs them. Found by parsing source, without importing any module.
    """
    module_names = list(module_names)
    if not module_names:
        return []
    root = _project_root(module_names[0])
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        # Installed without -e: the neighbours are other libraries (versioned in stack_versions);
        # the project is the steps' own packages and the package this core belongs to.
        project = {name.split(".")[0] for name in module_names} | {__name__.split(".")[0]}
    else:
        project = {
            name[: -len(".py")] if name.endswith(".py") else name
            for name in os.listdir(root)
            if not name.startswith(".")
            and (name.endswith(".py") or os.path.isfile(os.path.join(root, name, "__init__.py")))
        }
    seen, pending = set(), []
    for name in module_names:
        files = _module_files(name)
        if not files:
            raise ModuleNotFoundError(f"cannot fingerprint module {name!r}: not found")
        pending += files
    while pending:
        path = os.path.realpath(pending.pop())
        if path in seen:
            continue
        seen.add(path)
        package = _package_of(path, root)
        parts = package.split(".") if package else []
        pending += [os.path.join(root, *parts[:k], "__init__.py") for k in range(1, len(parts) + 1)]
        for name in _imported_names(path, package):
            if name.split(".")[0] in project:
                path_parts = name.split(".")
                module = os.path.join(root, *path_parts)
                for candidate in (module + ".py", os.path.join(module, "__init__.py")):
                    if os.path.isfile(candidate):
                        pending.append(candidate)
    return sorted(seen)


@cache
def code_fingerprint(module_names: tuple) -> str:
    """sha256 over the source of `module_names` and every project module they import.

    Files are named relative to the project directory, so the digest does not depend on where
    the checkout lives.
    """
    files = project_files(module_names)
    base = _project_root(module_names[0])
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, base).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def params_json(params: Any) -> Any:
    """Parameters as JSON-ready data (dataclasses and mappings become dicts)."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def cache_key(step: str, params: Any, code_modules, input_fingerprints: Mapping[str, str]) -> str:
    """The cache key of one execution: equal keys mean the step would compute the same outputs.

    input_fingerprints: input key -> content fingerprint of the input artifact.
    """
    material = {
        "step": step,
        "params": params_json(params),
        "code": code_fingerprint(tuple(code_modules)) if code_modules else None,
        "inputs": dict(sorted(input_fingerprints.items())),
        "stack": stack_versions(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
