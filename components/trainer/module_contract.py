"""What a trainer module file must define, checked from its source without importing it.

A module file (`trainer.module_file`) defines exactly one entry point at its top level:

- `model_fn(features, labels, mode, params)`: a tf.estimator model function (see
  `components.trainer.estimator_contract` for what it must return), or
- `keras_model(params)`: returns a `tf.keras.Model` mapping float32 [N, 28, 28, 1] images in
  [0, 1] to 10 logits (the trainer wraps it, see `components.trainer.keras_model_fn`).

An entry point is a top-level `def`, or a top-level name bound by an import or an assignment
(`from components.trainer.model import model_fn`); what it is bound to is checked when the
trainer imports the module. This module imports nothing heavier than `ast`, so the pipeline
can check a module file when it is built, before any step runs.
"""

from __future__ import annotations

import ast
import os

from pipeline.core.errors import ConfigError

MODEL_FN = "model_fn"
KERAS_MODEL = "keras_model"
ENTRY_POINTS = (MODEL_FN, KERAS_MODEL)
SETTING = "trainer.module_file"


def _bound_names(tree: ast.Module) -> set:
    """Names bound at the module's top level by def, class, import or assignment."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def entry_point_of_source(source: bytes, path: str) -> str:
    """The entry point ("model_fn" or "keras_model") that the module source defines.

    Raises ConfigError naming `path` when the source does not parse, defines neither entry
    point, or defines both.
    """
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"config key {SETTING}: {path} line {e.lineno}: syntax error: {e.msg}") from e
    except ValueError as e:  # null bytes in the source
        raise ConfigError(f"config key {SETTING}: {path}: not Python source ({e})") from e
    found = [name for name in ENTRY_POINTS if name in _bound_names(tree)]
    if not found:
        raise ConfigError(
            f"config key {SETTING}: {path} defines neither {MODEL_FN}(features, labels, "
            f"mode, params) nor {KERAS_MODEL}(params) at its top level"
        )
    if len(found) > 1:
        raise ConfigError(
            f"config key {SETTING}: {path} defines both {MODEL_FN} and {KERAS_MODEL}; define exactly one"
        )
    return found[0]


def check_module_file(path: str) -> str:
    """Checks the module file at `path` (exists, parses, one entry point); returns its entry point.

    Raises ConfigError naming the file and what is wrong.
    """
    absolute = os.path.abspath(path)
    if not os.path.isfile(absolute):
        raise ConfigError(f"config key {SETTING}: no module file at {absolute}")
    try:
        with open(absolute, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"config key {SETTING}: {absolute}: cannot read: {e.strerror or e}") from e
    return entry_point_of_source(source, absolute)
