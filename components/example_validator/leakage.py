"""Train/test leakage: training and eval digits that equal a digit of the test split (pure numpy).

A digit is an image of IMAGE_PIXELS uint8 pixels (row-major 28 x 28); labels play no part (a
test image under another label still shows the gate the answer).

- exact duplicate: the same 784 bytes as a test digit;
- near duplicate: not exact, but at most NEAR_MAX_PIXELS pixels differ from a test digit by more
  than PIXEL_TOLERANCE grey levels: a few pixels painted over, noise of a few grey levels, a
  brightness change of up to PIXEL_TOLERANCE. A one-pixel shift is not one (it moves every stroke
  edge: far more than NEAR_MAX_PIXELS pixels) and is not caught.

Both are found without comparing every pair: each digit's 7 x 7 grid of 4 x 4 blocks
is reduced to the number of inked pixels (above INK_LEVEL) per block, in steps of COUNT_STEP;
the blocks are dealt into TABLES interleaved subsets (each block sits in all but one), and digits
sharing one subset's values exactly are candidates, compared pixel by pixel. A byte-equal copy
shares every subset, so no exact duplicate is missed. A change confined to
the blocks one subset leaves out is always a candidate; a change that moves some block's count
across a step in every subset goes unseen (measured on MNIST test digits: about 1 in 100 with 5
random pixels repainted, 6 in 100 with noise of +-10 grey levels, 11 in 100 made 10% darker:
benchmarks/bench_leakage.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.formats.examples import IMAGE_PIXELS, IMAGE_SIDE

# Grey levels two pixels may differ by and still count as the same pixel.
PIXEL_TOLERANCE = 32
# Pixels (of 784) that may differ by more than PIXEL_TOLERANCE in a near duplicate.
NEAR_MAX_PIXELS = 10
BLOCK = 4  # block_signatures counts a block's row as one uint32: 4 pixels
# A pixel above INK_LEVEL is inked; a block's inked pixels (0..16) are counted in COUNT_STEPs.
INK_LEVEL = 63
COUNT_STEP = 4
TABLES = 3
# Record indexes named in the one-line message.
FIRST_FEW = 5
# Candidate pairs compared per numpy batch (bounds the memory of the comparison to ~80 MB).
_COMPARE_BATCH = 100_000
# Every _SAMPLE_STRIDE-th pixel is compared first, to discard candidates cheaply.
_SAMPLE_STRIDE = 4


@dataclass(frozen=True)
class LeakageResult:
    """Training and eval digits found in the test split.

    checked: digits compared with the test split ({split: count}); test_digits: its size.
    exact / near: {split: sorted record indexes within that split} of exact / near duplicates
    (a digit is in one of the two at most).
    """

    checked: dict[str, int]
    test_digits: int
    exact: dict[str, list[int]] = field(default_factory=dict)
    near: dict[str, list[int]] = field(default_factory=dict)

    @property
    def exact_count(self) -> int:
        return sum(len(v) for v in self.exact.values())

    @property
    def near_count(self) -> int:
        return sum(len(v) for v in self.near.values())

    @property
    def near_rate(self) -> float:
        """Near duplicates per digit checked (0.0 when nothing was checked)."""
        total = sum(self.checked.values())
        return self.near_count / total if total else 0.0

    def first(self, found: dict[str, list[int]], count: int = FIRST_FEW) -> list[str]:
        """The first `count` of `found` as "split[index]", splits in the order checked."""
        named = [f"{split}[{i}]" for split in self.checked for i in found.get(split, [])]
        return named[:count]

    def to_json(self) -> dict:
        return {
            "checked": dict(self.checked),
            "test_digits": self.test_digits,
            "exact_duplicates": self.exact_count,
            "near_duplicates": self.near_count,
            "near_duplicate_rate": round(self.near_rate, 6),
            "first_exact": self.first(self.exact),
            "first_near": self.first(self.near),
            "pixel_tolerance": PIXEL_TOLERANCE,
            "near_max_pixels": NEAR_MAX_PIXELS,
        }


def check_images(images: np.ndarray) -> np.ndarray:
    """`images` as a C-contiguous uint8 [N, IMAGE_PIXELS] array; ValueError for another shape."""
    array = np.ascontiguousarray(images)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != IMAGE_PIXELS:
        raise ValueError(f"images must be uint8 [N, {IMAGE_PIXELS}], got {array.dtype} {array.shape}")
    return array


def block_signatures(images: np.ndarray) -> list[np.ndarray]:
    """TABLES arrays of per-image keys (np.void): the inked-pixel steps of interleaved block subsets."""
    side = IMAGE_SIDE // BLOCK
    inked = np.ascontiguousarray(images > INK_LEVEL).view(np.uint8)
    # A block's row is BLOCK = 4 consecutive bytes of 0 or 1: read as one uint32, multiplying by
    # 0x01010101 adds the 4 bytes into the top byte (a vectorised count, no strided sum).
    quads = inked.reshape(-1, IMAGE_SIDE * side).view(np.uint32)
    per_row = ((quads * np.uint32(0x01010101)) >> np.uint32(24)).astype(np.uint8)
    rows = per_row.reshape(-1, side, BLOCK, side)
    per_block = rows[:, :, 0, :].copy()
    for offset in range(1, BLOCK):
        per_block += rows[:, :, offset, :]
    quantised = (per_block // COUNT_STEP).reshape(len(images), side * side)
    blocks = np.arange(side * side)
    keys = []
    for table in range(TABLES):
        subset = np.ascontiguousarray(quantised[:, blocks % TABLES != table])
        keys.append(subset.view(np.dtype((np.void, subset.shape[1]))).ravel())
    return keys


def differing_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two uint8 [N, P] arrays: pixels differing by more than PIXEL_TOLERANCE."""
    difference = np.maximum(a, b) - np.minimum(a, b)  # |a - b| without leaving uint8
    return np.count_nonzero(difference > PIXEL_TOLERANCE, axis=1)


def candidate_pairs(keys: np.ndarray, test_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, test row) pairs whose keys are equal, by sorting (no Python loop over rows)."""
    order = np.argsort(test_keys, kind="stable")
    sorted_keys = test_keys[order]
    lo = np.searchsorted(sorted_keys, keys, side="left")
    hi = np.searchsorted(sorted_keys, keys, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(keys)), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    return rows, order[starts + np.arange(len(rows))]


def duplicates(images: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exact, near): sorted indexes of `images` rows equal to a `test` row byte for byte, and of
    the other rows within NEAR_MAX_PIXELS differing pixels of one (both uint8 [N, IMAGE_PIXELS])."""
    is_exact = np.zeros(len(images), dtype=bool)
    is_near = np.zeros(len(images), dtype=bool)
    if not len(images) or not len(test):
        return np.flatnonzero(is_exact), np.flatnonzero(is_near)
    pairs = [
        candidate_pairs(keys, test_keys)
        for keys, test_keys in zip(block_signatures(images), block_signatures(test))
    ]
    # A pair sharing several subsets is compared once.
    codes = np.unique(np.concatenate([rows * len(test) + test_rows for rows, test_rows in pairs]))
    rows, test_rows = codes // len(test), codes % len(test)
    # Most candidates are other writers' digits: a quarter of the pixels already holds more than
    # NEAR_MAX_PIXELS differing ones (a count over a subset never exceeds the full count).
    sample, test_sample = images[:, ::_SAMPLE_STRIDE].copy(), test[:, ::_SAMPLE_STRIDE].copy()
    for start in range(0, len(rows), _COMPARE_BATCH):
        r, t = rows[start : start + _COMPARE_BATCH], test_rows[start : start + _COMPARE_BATCH]
        close = differing_pixels(sample[r], test_sample[t]) <= NEAR_MAX_PIXELS
        r, t = r[close], t[close]
        close = differing_pixels(images[r], test[t]) <= NEAR_MAX_PIXELS
        r, t = r[close], t[close]
        same = (images[r] == test[t]).all(axis=1)
        is_exact[r[same]] = True
        is_near[r[~same]] = True
    return np.flatnonzero(is_exact), np.flatnonzero(is_near & ~is_exact)


def find_leakage(splits: dict[str, np.ndarray], test: np.ndarray) -> LeakageResult:
    """Exact and near duplicates of `test` digits in each of `splits` ({split: images}).

    images and test: uint8 [N, IMAGE_PIXELS] (ValueError otherwise).
    """
    test = check_images(test)
    exact, near = {}, {}
    for split, images in splits.items():
        found_exact, found_near = duplicates(check_images(images), test)
        exact[split], near[split] = found_exact.tolist(), found_near.tolist()
    return LeakageResult(
        checked={s: len(v) for s, v in splits.items()}, test_digits=len(test), exact=exact, near=near
    )


def exceeded(result: LeakageResult, max_exact: int, max_near_rate: float) -> str | None:
    """One line giving the counts and first record indexes when a limit is exceeded, else None.

    Exceeded means strictly more exact duplicates than `max_exact`, or a near-duplicate rate
    strictly above `max_near_rate`.
    """
    too_many_exact = result.exact_count > max_exact
    too_many_near = result.near_rate > max_near_rate
    if not (too_many_exact or too_many_near):
        return None
    checked = sum(result.checked.values())
    parts = [
        f"{result.exact_count} exact (limit {max_exact})"
        + (f", first {', '.join(result.first(result.exact))}" if result.exact_count else ""),
        f"{result.near_count} near, {result.near_rate:.4%} of {checked} (limit {max_near_rate:.4%})"
        + (f", first {', '.join(result.first(result.near))}" if result.near_count else ""),
    ]
    return f"train/test leakage: digits of the test split in {'+'.join(result.checked)}: " + "; ".join(parts)
