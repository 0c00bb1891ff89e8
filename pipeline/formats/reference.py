"""ReferenceStatistics: the label and pixel-value histograms of a reference dataset, as JSON.

The data gate compares a pipeline root's *first* span with it (there is no previous span to
drift from). It holds only what the drift checks read, the exact value histograms that
StatisticsGen stores in `FeatureStats.pb` (see `pipeline.formats.statistics`), summed over the
reference's splits, plus where they came from:

    {
      "format": "reference_statistics/1",
      "name": "the shipped MNIST reference",       # how the gate's message and reports name it
      "description": "...",
      "num_examples": 60000,
      "histograms": {
        "image": {"bins": 256, "counts": [...], "out_of_range_values": 0},
        "label": {"bins": 10,  "counts": [...], "out_of_range_values": 0}
      },
      "splits": {"eval": 5071, "train": 54929},   # the StatisticsGen splits summed, and their sizes
      "sources": {"<file>": {"sha256": "<of the file's bytes>",
                             "sha256_decompressed": "<of the gunzipped bytes>"}},
      "generated_by": "scripts/make_reference.py --data-root data/mnist"
    }

The file is written by `scripts/make_reference.py` with sorted keys and no timestamp, so the
same data always gives the same bytes (and the same sha256, recorded beside it in
`SHA256SUMS`). The pipeline reads it as an external input by content digest
(`pipeline.core.external`): editing it reruns the gate. Reading needs neither TFDV nor
TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from pipeline.core.errors import InputDataError
from pipeline.formats.statistics import LABEL_BINS, LABEL_FEATURE, PIXEL_BINS, PIXEL_FEATURE

ARTIFACT_TYPE = "ReferenceStatistics"
FORMAT = "reference_statistics/1"
# The histograms a reference must hold, and their number of integer bins.
FEATURE_BINS = {LABEL_FEATURE: LABEL_BINS, PIXEL_FEATURE: PIXEL_BINS}
SUMS_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class Reference:
    """A parsed reference: `histograms` maps each feature of FEATURE_BINS to int64 counts."""

    name: str
    num_examples: int
    histograms: dict[str, np.ndarray]
    description: str = ""
    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def parse_reference(data: bytes, path: str) -> Reference:
    """The Reference in the JSON bytes `data` (read from `path`, which errors name).

    Raises InputDataError when the bytes are not JSON of this format, a histogram of
    FEATURE_BINS is missing, has the wrong number of bins, a negative, non-integer or all-zero
    count, or the label counts disagree with `num_examples`.
    """
    try:
        doc = json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputDataError(f"reference statistics {path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputDataError(f"reference statistics {path}: format {found!r}, expected {FORMAT!r}")
    name, num_examples = doc.get("name"), doc.get("num_examples")
    if not isinstance(name, str) or not name.strip():
        raise InputDataError(f"reference statistics {path}: no 'name'")
    if not _is_count(num_examples) or num_examples < 1:
        raise InputDataError(f"reference statistics {path}: 'num_examples' must be a positive integer")
    histograms = {}
    for feature, bins in FEATURE_BINS.items():
        entry = (doc.get("histograms") or {}).get(feature)
        counts = entry.get("counts") if isinstance(entry, dict) else None
        if not isinstance(counts, list) or len(counts) != bins or not all(_is_count(c) for c in counts):
            raise InputDataError(
                f"reference statistics {path}: histograms.{feature}.counts must be "
                f"{bins} non-negative integers"
            )
        if sum(counts) == 0:
            raise InputDataError(f"reference statistics {path}: histograms.{feature} is empty")
        histograms[feature] = np.array(counts, dtype=np.int64)
    if int(histograms[LABEL_FEATURE].sum()) != num_examples:
        raise InputDataError(
            f"reference statistics {path}: {int(histograms[LABEL_FEATURE].sum())} "
            f"labels counted, but num_examples is {num_examples}"
        )
    sources = doc.get("sources")
    if not isinstance(sources, dict):
        sources = {}
    return Reference(
        name=name.strip(),
        num_examples=num_examples,
        histograms=histograms,
        description=str(doc.get("description") or ""),
        sources=sources,
    )


def reference_bytes(
    *,
    name: str,
    description: str,
    histograms: Mapping[str, np.ndarray],
    out_of_range: Mapping[str, int],
    splits: Mapping[str, int],
    sources: Mapping[str, Mapping[str, str]],
    generated_by: str,
) -> bytes:
    """The file's bytes for these figures: sorted keys, one count per line, no timestamp.

    histograms / out_of_range: per feature of FEATURE_BINS, the counts and the values outside
    the bins. Raises ValueError when a histogram is missing or has the wrong number of bins.
    """
    entries: dict[str, dict[str, Any]] = {}  # a JSON object per feature
    for feature, bins in FEATURE_BINS.items():
        if feature not in histograms:
            raise ValueError(f"no histogram of {feature}")
        counts = np.asarray(histograms[feature], dtype=np.int64)
        if counts.shape != (bins,):
            raise ValueError(f"histogram of {feature} has shape {counts.shape}, expected ({bins},)")
        entries[feature] = {
            "bins": bins,
            "counts": [int(c) for c in counts],
            "out_of_range_values": int(out_of_range.get(feature, 0)),
        }
    doc = {
        "format": FORMAT,
        "name": name,
        "description": description,
        "num_examples": sum(entries[LABEL_FEATURE]["counts"]),
        "histograms": entries,
        "splits": {k: int(v) for k, v in splits.items()},
        "sources": {k: dict(v) for k, v in sources.items()},
        "generated_by": generated_by,
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def parse_sums(text: str) -> dict[str, str]:
    """{file name: sha256} of a `sha256sum`-format file ("<hex>  <name>" per line)."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.strip().partition(" ")
            sums[name.strip().lstrip("*")] = digest
    return sums


def format_sums(sums: Mapping[str, str]) -> str:
    """`sha256sum` format, so `sha256sum -c SHA256SUMS` checks the files in that folder."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
