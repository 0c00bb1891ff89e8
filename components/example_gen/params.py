"""ExampleGen's parameters (`[data]`): where the raw MNIST comes from and how it is split into
TFRecords, each checked when an instance is built (`pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.params import Params, at_least, local_path, unset_or
from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES


def _increasing_numbers(edges: tuple) -> str | None:
    numbers = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
    if numbers and list(edges) == sorted(edges):
        return None
    return f"must be increasing numbers, got {list(edges)!r}"


def check_window_spans(window: Any) -> None:
    """Raises ConfigError naming data.window_spans unless `window` is a usable window (the one
    rule for it, also applied where spans are resolved from plain arguments)."""
    DataParams.check_setting("window_spans", window)


def _plain_file_name_or_empty(marker: str) -> str | None:
    plain = marker not in (".", "..") and not set(marker) & {"/", "\\", "\0"} and marker.strip() == marker
    if marker == "" or plain:
        return None
    return (
        f"must be a plain file name such as _SUCCESS (no path separators), or empty for off; got {marker!r}"
    )


@dataclass(frozen=True)
class DataParams(Params):
    """Where the raw MNIST comes from and how it is split into TFRecords."""

    SECTION = "data"

    # The folder of the raw IDX files, or of span-N/ folders of them (the application supplies
    # the default: its data/mnist).
    data_root: str
    # None: the newest span-N/ folder (or the flat folder when there are no spans).
    span: int | None = None
    # How many of the newest spans to train on together (1 = the newest span only).
    window_spans: int = 1
    # A file each span-N/ folder (or a flat data root) must hold before it is read, e.g.
    # "_SUCCESS" as Hadoop and Spark write it last; spans without it are still being copied and
    # are skipped ("" = off: every span is read as soon as its folder exists).
    span_ready_marker: str = ""
    # Eval split = examples whose hash falls into 1 of `eval_hash_buckets` buckets.
    eval_hash_buckets: int = 12
    num_shards: int = 4
    # Bucket edges of the derived `ink_density` feature (fraction of pixels above 127).
    ink_density_edges: tuple = DEFAULT_INK_DENSITY_EDGES

    CHECKS = {
        "data_root": local_path(required=True),
        "span": unset_or(at_least(0)),
        "window_spans": at_least(1),
        "span_ready_marker": _plain_file_name_or_empty,
        "eval_hash_buckets": at_least(2),
        "num_shards": at_least(1),
        "ink_density_edges": _increasing_numbers,
    }
