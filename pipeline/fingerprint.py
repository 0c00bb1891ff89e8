"""Cache keys: a step's code, parameters, input fingerprints and library versions, hashed."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from functools import lru_cache
from typing import Any, Mapping

# Libraries whose version changes what a step produces.
_STACK = ("tensorflow", "tensorflow-data-validation", "tensorflow-model-analysis", "tfx-bsl",
          "apache-beam", "pyarrow", "numpy")


@lru_cache(maxsize=None)
def stack_versions() -> tuple:
    """(name, version) of the libraries that shape outputs; 'missing' when not installed."""
    versions = []
    for name in _STACK:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, "missing"))
    return tuple(versions)


@lru_cache(maxsize=None)
def code_fingerprint(module_name: str) -> str:
    """sha256 over the source files of a module or package (all .py files below a package).

    Found without importing the module, so fingerprinting stays cheap.
    """
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"cannot fingerprint module {module_name!r}: not found")
    if spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        files = []
        for dirpath, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py")]
    else:
        root, files = os.path.dirname(spec.origin), [spec.origin]
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def params_json(params: Any) -> Any:
    """Parameters as JSON-ready data (dataclasses and mappings become dicts)."""
    if dataclasses.is_dataclass(params):
        params = dataclasses.asdict(params)
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def cache_key(step: str, params: Any, code_modules, input_fingerprints: Mapping[str, str]) -> str:
    """The cache key of one execution: equal keys mean the step would compute the same outputs.

    input_fingerprints: input key -> content fingerprint of the input artifact.
    """
    material = {
        "step": step,
        "params": params_json(params),
        "code": {m: code_fingerprint(m) for m in code_modules},
        "inputs": dict(sorted(input_fingerprints.items())),
        "stack": stack_versions(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
