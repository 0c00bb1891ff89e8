"""Loading the trainer's module file (`trainer.module_file`) into the model_fn the Estimator runs.

`load_module(path, expected_digest)` reads the file once, checks its bytes against the digest
the run fingerprinted (so the cache key describes the code that runs), executes exactly those
bytes as a fresh module and returns a `LoadedModule` whose `model_fn` honours the Estimator
contract: the module's `model_fn` behind `estimator_contract.honour_contract`, or its
`keras_model` behind `keras_model_fn`. Loads are kept per (path, digest) in this process, so
the trainer, warm start and the Estimator see one module object.

A module file is code: it runs with the pipeline's rights. Only the path the operator's config
names is ever loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

from components.trainer import module_contract
from components.trainer.estimator_contract import check_contract, honour_contract
from components.trainer.keras_model_fn import keras_model_fn
from pipeline.core.errors import ConfigError
from pipeline.core.external import CONTENT_DIGEST, check_content
from pipeline.core.step import Artifact

_LOADED: dict = {}
# Absolute path -> the LoadedModule last loaded against the digest its run recorded: what the
# Estimator trains, so the code that runs is the code that was fingerprinted even when the
# file changes afterwards.
_VERIFIED: dict = {}


@dataclass(frozen=True)
class LoadedModule:
    """A module file as the trainer uses it.

    path: its absolute path; digest: sha256 of the bytes that were executed; entry_point:
    "model_fn" or "keras_model"; model_fn: the Estimator model_fn built from the entry point.
    """

    path: str
    digest: str
    entry_point: str
    model_fn: Callable

    @property
    def where(self) -> str:
        """How errors name the module: "trainer.module_file <path>"."""
        return f"{module_contract.SETTING} {self.path}"


class _VerifiedSource(importlib.abc.SourceLoader):
    """An import loader that hands Python the bytes already read and digest-checked, never the
    file again (which could have changed since)."""

    def __init__(self, source: bytes, path: str):
        self._source, self._path = source, path

    def get_filename(self, fullname: str) -> str:
        return self._path

    def get_data(self, path: str) -> bytes:
        return self._source


def _execute(source: bytes, path: str, digest: str) -> types.ModuleType:
    """Imports `source` as a new module named after its digest (registered in sys.modules, which
    dataclasses and pickling in the module need). Raises ConfigError naming `path`."""
    name = f"trainer_module_{digest[:16]}"
    loader = _VerifiedSource(source, path)
    spec = importlib.util.spec_from_loader(name, loader, origin=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure of the module's own top-level code
        del sys.modules[name]
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"{module_contract.SETTING} {path}: import failed: {type(e).__name__}: {first}"
        ) from e
    return module


def _entry_model_fn(module: types.ModuleType, entry_point: str, where: str) -> Callable:
    entry = getattr(module, entry_point, None)
    if not callable(entry):
        raise ConfigError(f"{where}: {entry_point} is {type(entry).__name__}, not a function")
    if entry_point == module_contract.MODEL_FN:
        return honour_contract(entry, where)
    return keras_model_fn(entry, where)


def load_module(path: str, expected_digest: str | None = None) -> LoadedModule:
    """The module file at `path` as a LoadedModule (see the module docstring).

    expected_digest: the sha256 the run recorded for the file; None to take the file as it is.
    Raises ConfigError (missing, unreadable, syntax error, no or two entry points, import
    error, an entry point that is not a function) and InputDataError when the file's bytes no
    longer match `expected_digest` (it changed after the run fingerprinted it).
    """
    absolute = os.path.abspath(path)
    try:
        with open(absolute, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"{module_contract.SETTING}: {absolute}: cannot read: {e.strerror or e}") from e
    digest = check_content(source, expected_digest, absolute)
    key = (absolute, digest)
    if key not in _LOADED:
        entry_point = module_contract.entry_point_of_source(source, absolute)
        module = _execute(source, absolute, digest)
        where = f"{module_contract.SETTING} {absolute}"
        _LOADED[key] = LoadedModule(
            absolute, digest, entry_point, _entry_model_fn(module, entry_point, where)
        )
    if expected_digest is not None:
        _VERIFIED[absolute] = _LOADED[key]
    return _LOADED[key]


def load_checked(cfg, module_artifact: Artifact | None = None) -> LoadedModule:
    """The module `cfg.module_file` names (a TrainerParams), its contract checked in a scratch
    graph in every mode (`estimator_contract.check_contract`) with params as the Estimator
    gets them.

    module_artifact: the step's `module_file` input; its `content_digest` is the digest the
    file must still have. Raises as `load_module` and `check_contract`.
    """
    expected = module_artifact.properties.get(CONTENT_DIGEST) if module_artifact is not None else None
    module = load_module(cfg.module_file, expected)
    check_contract(module.model_fn, dataclasses.asdict(cfg), module.where)
    return module


def model_fn_for(cfg) -> Callable:
    """The Estimator model_fn of the module that `cfg.module_file` names (a TrainerParams): the
    one this process verified against its recorded digest (`load_module(path, digest)`, which
    the trainer step and every cluster task do first); the file as it is now when none was."""
    verified = _VERIFIED.get(os.path.abspath(cfg.module_file))
    return verified.model_fn if verified is not None else load_module(cfg.module_file).model_fn
