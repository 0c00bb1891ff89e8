"""Which raw-data folders (spans) a run reads, and the content fingerprint of their files.

A data root is either *flat* (the four MNIST files directly inside it: span 0) or *spanned*
(`span-N/` folders, N a non-negative integer, each holding the four files). A run reads the
newest span, or the one named by `data.span`, together with the `data.window_spans - 1` spans
before it. ExampleGen's input resolver (`component.raw_data_input`) turns the result into the
`raw_data` input artifact:
uri=data_root, properties {"spans": [...], "span_dirs": [...], "fingerprint": "..."}.

With a ready marker (`data.span_ready_marker`, e.g. "_SUCCESS" as Hadoop and Spark write it) a
span folder (or a flat root) counts only once that file is in it: a delivery still being copied
is skipped with one log line, and the newest, window and explicit span are chosen among the
complete spans. The chosen span numbers enter the fingerprint, so a marker that lands later
changes the cache key and the next run reads the new span.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from components.example_gen.params import check_window_spans
from pipeline.core.digest import file_digest
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.formats import idx
from pipeline.formats.idx import DATASET_FILES

_SPAN_DIR = re.compile(r"^span-(\d+)$")

log = logging.getLogger(__name__)


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


def resolve_spans(data_root: str, span: int | None, window: int, ready_marker: str = "") -> list:
    """Returns the spans a run reads: [(span, folder), ...], oldest first, `window` long.

    span: the newest span to read (None: the newest there is).
    window: how many spans to read, ending at `span` (>= 1); earlier spans are the ones
        listed before it, whatever their numbers.
    ready_marker: a file name ("" = off); when set, only spans whose folder holds it are read,
        and each span without it is logged as not ready (see `ready_spans`).
    Raises ConfigError naming data.data_root / data.span / data.window_spans when the root has
    no usable layout, `span` does not exist, or fewer than `window` spans end at it; with a
    ready marker, InputDataError (the data gate's exit status) when `span` is not ready, no
    span is, or fewer than `window` complete spans end at the chosen one while enough would
    once the others are complete.
    """
    check_window_spans(window)  # DataParams' rule, for callers passing plain arguments
    spans = list_spans(data_root)
    numbers = [n for n, _ in spans]
    if span is not None and span not in numbers:
        raise ConfigError(
            f"config key data.span: no span {span} in {data_root} (available: {', '.join(map(str, numbers))})"
        )
    everything = spans
    if ready_marker:
        spans = ready_spans(data_root, spans, span, ready_marker)
        numbers = [n for n, _ in spans]
    end = len(spans) if span is None else numbers.index(span) + 1
    if window > end:
        # All spans up to the chosen one, complete or not: if they would fill the window, only
        # spans still being copied stand in its way (not ready), else the setting asks too much.
        upto = everything[: everything.index(spans[end - 1]) + 1]
        if window <= len(upto):
            raise InputDataError(
                f"{data_root}: {window} spans requested (data.window_spans) ending at span "
                f"{numbers[end - 1]}, but only {end} of them are complete "
                f"({', '.join(map(str, numbers[:end]))}; ready marker {ready_marker})"
            )
        raise ConfigError(
            f"config key data.window_spans: {window} spans requested ending at span "
            f"{numbers[end - 1]}, but {data_root} has only {len(upto)} "
            f"({', '.join(str(n) for n, _ in upto)})"
        )
    return spans[end - window : end]


def ready_spans(data_root: str, spans: Sequence, span: int | None, ready_marker: str) -> list:
    """The spans of `spans` ([(span, folder), ...]) whose folder holds the file `ready_marker`.

    Logs one warning per span without it (naming its folder and the marker). Raises
    InputDataError when `span` (the one asked for, None: any) is not ready, or none is.
    """
    ready = []
    for number, folder in spans:
        if os.path.isfile(os.path.join(folder, ready_marker)):
            ready.append((number, folder))
        else:
            log.warning("%s: not ready (no %s in it yet); span %d not read", folder, ready_marker, number)
    if span is not None and span not in [n for n, _ in ready]:
        folder = dict(spans)[span]
        raise InputDataError(
            f"span {span} (data.span) is not ready: {folder} holds no {ready_marker} "
            f"(data.span_ready_marker); run again once it is complete"
        )
    if not ready:
        flat = [f for _, f in spans] == [data_root]
        missing = (
            f"the flat data folder holds no {ready_marker}"
            if flat
            else f"no span-N/ folder holds {ready_marker}"
        )
        raise InputDataError(
            f"{data_root}: no complete span: {missing} (data.span_ready_marker); "
            f"run again once a delivery is complete"
        )
    return ready


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


def raw_data_properties(data_root: str, span: int | None, window: int, ready_marker: str = "") -> Mapping:
    """The `raw_data` artifact's properties: {"spans", "span_dirs", "fingerprint"}.

    Raises ConfigError or InputDataError (see `resolve_spans`, `fingerprint_spans`).
    """
    spans = resolve_spans(data_root, span, window, ready_marker)
    return {
        idx.SPANS: [number for number, _ in spans],
        idx.SPAN_DIRS: [folder for _, folder in spans],
        idx.FINGERPRINT: fingerprint_spans(spans),
    }
