"""Reading the files artifacts are made of, with one-line errors that name the file.

Every format module reads through these, so a missing, unreadable or malformed file reads the
same everywhere: `InputDataError("[<label> ]<path>: <what is wrong>")`.
"""

from __future__ import annotations

import json

from pipeline.core.errors import InputDataError


def _fail(path: str, label: str | None, what: str) -> InputDataError:
    return InputDataError(f"{label + ' ' if label else ''}{path}: {' '.join(str(what).split())}")


def read_bytes(
    path: str, label: str | None = None, expected: str = "a file", max_bytes: int | None = None
) -> bytes:
    """The bytes of `path`.

    label: what the message calls the file ("schema file"); expected: what a directory at
    `path` should have been. Raises InputDataError when the file is missing, a directory,
    unreadable, or (with `max_bytes`) larger than `max_bytes`.
    """
    try:
        with open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise _fail(path, label, "file not found") from e
    except IsADirectoryError as e:
        raise _fail(path, label, f"is a directory, expected {expected}") from e
    except OSError as e:
        raise _fail(path, label, f"cannot be read ({e.strerror or e})") from e
    if max_bytes is not None and len(data) > max_bytes:
        raise _fail(path, label, f"larger than {max_bytes} bytes")
    return data


def read_json(path: str, label: str | None = None):
    """The parsed JSON file at `path`; InputDataError naming it when missing or malformed."""
    try:
        return json.loads(read_bytes(path, label))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _fail(path, label, f"not valid JSON ({e})") from e


def read_json_object(path: str, label: str | None = None) -> dict:
    """`read_json`, and InputDataError when the file holds anything but a JSON object."""
    data = read_json(path, label)
    if not isinstance(data, dict):
        raise _fail(path, label, "not a JSON object")
    return data
