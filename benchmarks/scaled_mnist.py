"""Data roots of 1x, 4x, 16x ... the MNIST volume, made of real digits that are not byte copies.

A size s is either a fraction below 1 (one span: the first s of the shipped training and test
digits) or a whole number n (spans span-0 .. span-<n-1>: span-0 is the shipped MNIST as it is,
span k >= 1 every shipped digit moved by its own small affine transformation, drawn from a
generator seeded by k: a rotation of 3 to 10 degrees either way, a shift of up to 1.5 pixels
on each axis and a scale of 0.92 to 1.08, resampled bilinearly). Labels stay; every
transformed digit differs from its source in its bytes, which `transformed_span` checks.

Spans are written once into a pool (`<work>/spans/span-k`, marked complete by a file written
last) and each data root (`<work>/data-<label>`) links to the pool's folders, so 4x and 16x share
their first four spans on disk and a rerun with the same work folder rebuilds nothing.
"""

from __future__ import annotations

import functools
import math
import os
import shutil

import numpy as np

from pipeline.formats import idx

SIDE = idx.IMAGE_ROWS
CENTRE = (SIDE - 1) / 2.0
ROTATION_DEGREES = (3.0, 10.0)
MAX_SHIFT = 1.5
SCALE = (0.92, 1.08)
# Digits transformed per numpy pass: bounds the coordinate arrays to a few MB.
_CHUNK = 2_000
_COMPLETE = ".complete"
# gzip level of the written spans: decompression (what the pipeline pays) costs the same at
# any level; level 6 writes files of the shipped files' size.
_GZIP_LEVEL = 6


def parse_size(text: str) -> float:
    """A --sizes value: a fraction in (0, 1) or a whole number >= 1. Raises ValueError."""
    size = float(text)
    if not (0 < size < 1 or (size >= 1 and size == int(size))):
        raise ValueError(f"a size is a fraction in (0, 1) or a whole number >= 1, got {text!r}")
    return size


def size_label(size: float) -> str:
    """'1x', '16x', '0.25x'."""
    return f"{int(size)}x" if size >= 1 else f"{size:g}x"


def affine_parameters(span: int, count: int) -> dict:
    """The transformation of each of `count` digits of span `span` (>= 1): {"angle" (radians),
    "shift" ([count, 2] pixels, rows then columns), "scale"}; the same for the same span on
    every machine (numpy's PCG64 seeded by the span)."""
    if span < 1:
        raise ValueError(f"span 0 is the shipped data, not transformed; got span {span}")
    rng = np.random.default_rng([20261208, span])
    degrees = rng.uniform(*ROTATION_DEGREES, count) * rng.choice((-1.0, 1.0), count)
    return {
        "angle": np.deg2rad(degrees),
        "shift": rng.uniform(-MAX_SHIFT, MAX_SHIFT, (count, 2)),
        "scale": rng.uniform(*SCALE, count),
    }


def transform_digits(
    images: np.ndarray, angle: np.ndarray, shift: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """N x 28 x 28 uint8 digits, each rotated by angle[i] about the centre, scaled by scale[i]
    and shifted by shift[i] (pixels), bilinearly resampled with black outside the digit;
    returns a new N x 28 x 28 uint8 array."""
    out = np.empty_like(images)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    rows, cols = rows.ravel() - CENTRE, cols.ravel() - CENTRE
    for start in range(0, len(images), _CHUNK):
        end = min(start + _CHUNK, len(images))
        out[start:end] = _resample(
            images[start:end], rows, cols, angle[start:end], shift[start:end], scale[start:end]
        )
    return out


def _resample(images, rows, cols, angle, shift, scale) -> np.ndarray:
    """Each output pixel takes the source value at the inverse transformation of its position."""
    n = len(images)
    cos = (np.cos(angle) / scale).astype(np.float32)[:, None]
    sin = (np.sin(angle) / scale).astype(np.float32)[:, None]
    r = rows[None, :] - shift[:, :1].astype(np.float32)
    c = cols[None, :] - shift[:, 1:].astype(np.float32)
    src_r = cos * r + sin * c + CENTRE
    src_c = -sin * r + cos * c + CENTRE
    r0, c0 = np.floor(src_r).astype(np.int32), np.floor(src_c).astype(np.int32)
    fr, fc = src_r - r0, src_c - c0
    padded = np.zeros((n, SIDE + 2, SIDE + 2), np.float32)  # a black border for samples outside
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(n, -1)

    def at(rr, cc):
        rr = np.clip(rr + 1, 0, SIDE + 1)
        cc = np.clip(cc + 1, 0, SIDE + 1)
        return np.take_along_axis(flat, rr * (SIDE + 2) + cc, axis=1)

    value = (
        at(r0, c0) * (1 - fr) * (1 - fc)
        + at(r0, c0 + 1) * (1 - fr) * fc
        + at(r0 + 1, c0) * fr * (1 - fc)
        + at(r0 + 1, c0 + 1) * fr * fc
    )
    return np.clip(np.rint(value), 0, 255).astype(np.uint8).reshape(n, SIDE, SIDE)


def transformed_span(images: np.ndarray, span: int) -> np.ndarray:
    """The digits of span `span` (>= 1): each of `images` moved by its own `affine_parameters`.
    Raises RuntimeError when a transformed digit equals its source byte for byte."""
    params = affine_parameters(span, len(images))
    out = transform_digits(images, params["angle"], params["shift"], params["scale"])
    same = np.flatnonzero((out == images).all(axis=(1, 2)))
    if same.size:
        raise RuntimeError(f"span {span}: digit {int(same[0])} came out byte-identical to its source")
    return out


def _shipped(source_root: str) -> dict:
    """{"train": (images, labels), "test": (images, labels)} of the flat data root `source_root`."""
    dataset = idx.load_dataset(source_root)
    return {
        "train": (dataset.train.images.array, dataset.train.labels.array),
        "test": (dataset.test.images.array, dataset.test.labels.array),
    }


FILES = {"train": (idx.TRAIN_IMAGES, idx.TRAIN_LABELS), "test": (idx.TEST_IMAGES, idx.TEST_LABELS)}


def _write_span(folder: str, digits: dict) -> None:
    """Writes the four files of `digits` ({"train"/"test": (images, labels)}) into `folder`,
    then the completion marker."""
    os.makedirs(folder, exist_ok=True)
    for source, (images, labels) in digits.items():
        images_name, labels_name = FILES[source]
        idx.write_idx(os.path.join(folder, images_name), images, _GZIP_LEVEL)
        idx.write_idx(os.path.join(folder, labels_name), labels, _GZIP_LEVEL)
    with open(os.path.join(folder, _COMPLETE), "w") as f:
        f.write("written by benchmarks/scaled_mnist.py\n")


def pool_span(work: str, span: int, source_root: str, shipped=None) -> str:
    """The folder of span `span` in the pool under `work`, written when not complete yet
    (span 0: a copy of `source_root`'s four files). `shipped`: a function returning the
    source's digits (see `_shipped`), so several spans decode the source once."""
    folder = os.path.join(work, "spans", f"span-{span}")
    if os.path.isfile(os.path.join(folder, _COMPLETE)):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    if span == 0:
        os.makedirs(folder)
        for names in FILES.values():
            for name in names:
                shutil.copyfile(os.path.join(source_root, name), os.path.join(folder, name))
        with open(os.path.join(folder, _COMPLETE), "w") as f:
            f.write(f"a copy of {source_root}\n")
        return folder
    digits = shipped() if shipped else _shipped(source_root)
    _write_span(
        folder,
        {source: (transformed_span(images, span), labels) for source, (images, labels) in digits.items()},
    )
    return folder


def data_root(work: str, size: float, source_root: str) -> tuple:
    """(the data root of `size` under `work`, its number of spans), made when missing.

    A fraction: one span-0 of the first `size` of each source's digits; a whole number n:
    span-0 .. span-<n-1> linked from the pool."""
    root = os.path.join(work, f"data-{size_label(size)}")
    if size < 1:
        folder = os.path.join(root, "span-0")
        if not os.path.isfile(os.path.join(folder, _COMPLETE)):
            shutil.rmtree(folder, ignore_errors=True)
            digits = {
                source: (images[: math.ceil(len(images) * size)], labels[: math.ceil(len(labels) * size)])
                for source, (images, labels) in _shipped(source_root).items()
            }
            _write_span(folder, digits)
        return root, 1
    spans = int(size)
    os.makedirs(root, exist_ok=True)
    shipped = functools.cache(lambda: _shipped(source_root))
    for span in range(spans):
        link = os.path.join(root, f"span-{span}")
        if os.path.isfile(os.path.join(link, _COMPLETE)):
            continue
        target = pool_span(work, span, source_root, shipped)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(target, root), link)
    return root, spans
