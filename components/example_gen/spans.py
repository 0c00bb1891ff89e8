"""Which raw-data folders (spans) a run reads, and the content fingerprint of their files.

A data root is either *flat* (the four MNIST files directly inside it: span 0) or *spanned*
(`span-N/` folders, N a non-negative integer, each holding the four files). A run reads the
newest span, or the one named by `data.span`, together with the `data.window_spans - 1` spans
before it. ExampleGen's input resolver (`component.raw_data_input`) turns the result into the
`raw_data` input artifact:
uri=data_root, properties {"spans": [...], "span_dirs": [...], "fingerprint": "..."}.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from components.example_gen.params import check_window_spans
from pipeline.core.digest import file_digest
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.formats import idx
from pipeline.formats.idx import DATASET_FILES

_SPAN_DIR = re.compile(r"^span-(\d+)$")


def list_spans(data_root: str) -> list:
    """Returns every span of `data_root` as (span, folder) pairs, oldest first.

    Raises ConfigError when the root is missing, holds neither MNIST files nor span-N/
    folders, holds both (ambiguous), or holds two folders for one span number (span-1, span-01).
    """
    if not os.path.isdir(data_root):
        raise ConfigError(f"config key data.data_root: no directory at {data_root}")
    found = {}
    for name in os.listdir(data_root):
        match = _SPAN_DIR.match(name)
        full = os.path.join(data_root, name)
        if match and os.path.isdir(full):
            number = int(match.group(1))
            if number in found:
                raise ConfigError(
                    f"config key data.data_root: {data_root} holds two folders for span "
                    f"{number}: {os.path.basename(found[number])} and {name}"
                )
            found[number] = full
    flat_files = [n for n in DATASET_FILES if os.path.exists(os.path.join(data_root, n))]
    if found and flat_files:
        raise ConfigError(
            f"config key data.data_root: {data_root} holds both span-N/ folders and "
            f"MNIST files ({flat_files[0]}); keep one layout"
        )
    if found:
        return sorted(found.items())
    if flat_files:
        return [(0, data_root)]
    raise ConfigError(
        f"config key data.data_root: {data_root} holds neither the MNIST files "
        f"({', '.join(DATASET_FILES)}) nor span-N/ folders"
    )


def resolve_spans(data_root: str, span: int | None, window: int) -> list:
    """Returns the spans a run reads: [(span, folder), ...], oldest first, `window` long.

    span: the newest span to read (None: the newest there is).
    window: how many spans to read, ending at `span` (>= 1); earlier spans are the ones
        listed before it, whatever their numbers.
    Raises ConfigError naming data.data_root / data.span / data.window_spans when the root has
    no usable layout, `span` does not exist, or fewer than `window` spans end at it.
    """
    check_window_spans(window)  # DataParams' rule, for callers passing plain arguments
    spans = list_spans(data_root)
    numbers = [n for n, _ in spans]
    if span is None:
        end = len(spans)
    elif span in numbers:
        end = numbers.index(span) + 1
    else:
        raise ConfigError(
            f"config key data.span: no span {span} in {data_root} (available: {', '.join(map(str, numbers))})"
        )
    if window > end:
        raise ConfigError(
            f"config key data.window_spans: {window} spans requested ending at span "
            f"{numbers[end - 1]}, but {data_root} has only {end} "
            f"({', '.join(map(str, numbers[:end]))})"
        )
    return spans[end - window : end]


def fingerprint_digests(span_digests: Iterable) -> str:
    """Hex sha256 over [(span, {file name: sha256}), ...]: span numbers, names and digests.

    Independent of folder paths, so moving a data root keeps its fingerprint.
    """
    h = hashlib.sha256()
    for number, digests in span_digests:
        for name in DATASET_FILES:
            h.update(f"{int(number)}/{name}={digests[name]}\n".encode("ascii"))
    return h.hexdigest()


def span_file_digests(folder: str) -> dict:
    """File name -> sha256 of each of the four MNIST files in `folder`.

    Raises InputDataError naming a file that is missing or unreadable.
    """
    digests = {}
    for name in DATASET_FILES:
        path = os.path.join(folder, name)
        try:
            digests[name] = file_digest(path)
        except FileNotFoundError as e:
            raise InputDataError(f"{path}: file not found") from e
        except OSError as e:
            raise InputDataError(f"{path}: cannot read: {e.strerror or e}") from e
    return digests


def fingerprint_spans(spans: Sequence) -> str:
    """Hex sha256 over the raw files of `spans` ([(span, folder), ...]), for the cache key.

    Raises InputDataError naming a missing or unreadable file.
    """
    return fingerprint_digests((number, span_file_digests(folder)) for number, folder in spans)


def raw_data_properties(data_root: str, span: int | None, window: int) -> Mapping:
    """The `raw_data` artifact's properties: {"spans", "span_dirs", "fingerprint"}.

    Raises ConfigError (see `resolve_spans`) or InputDataError (see `fingerprint_spans`).
    """
    spans = resolve_spans(data_root, span, window)
    return {
        idx.SPANS: [number for number, _ in spans],
        idx.SPAN_DIRS: [folder for _, folder in spans],
        idx.FINGERPRINT: fingerprint_spans(spans),
    }
