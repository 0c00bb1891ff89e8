"""Digit images from files, in the model's input form: 784 float32 pixels, white digit on black.

Accepted files (recognised by their first bytes, not their names):
- PNG: any size and mode. Transparent images are laid over a white canvas first. Converted to
  grayscale. Inversion (`invert`): "auto" inverts when the mean pixel is brighter than mid-gray
  (a dark digit on a light background, as drawn on paper or screen), "yes" always, "no" never.
  A 28x28 image is used as it is; any other size is framed the way MNIST's digits were: cropped
  to the ink, scaled to fit 20x20 with its aspect kept, and centred by centre of mass in 28x28.
- gzip IDX images files (magic 0x803, N x 28 x 28), parsed and validated by
  `pipeline.formats.idx`; each record is one digit, with the same inversion rule.

Errors: InputDataError with one line naming the file (and record) for anything unreadable.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.core.errors import InputDataError
from pipeline.formats.examples import IMAGE_PIXELS, IMAGE_SIDE
from pipeline.formats.files import read_bytes
from pipeline.formats.idx import parse_idx

# MNIST's digits fit a 20x20 box inside the 28x28 frame.
BOX = 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
INVERT_CHOICES = ("auto", "yes", "no")
# Refuse absurd PNG dimensions before decoding (a tiny file can declare a huge image).
MAX_PNG_PIXELS = 50_000_000
# Ink is what is brighter than this share of the brightest pixel, when framing a large image.
INK_SHARE = 0.25
MAX_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class DigitImage:
    """One digit ready for the model.

    source: the file it came from; index: record number inside it (0 for a PNG).
    pixels: float32 [784], 0..255, white digit on black. inverted: whether it was inverted.
    """

    source: str
    index: int
    pixels: np.ndarray
    inverted: bool


def _should_invert(gray: np.ndarray, invert: str) -> bool:
    if invert == "auto":
        return float(gray.mean()) > 127.5
    return invert == "yes"


def frame_digit(gray: np.ndarray) -> np.ndarray:
    """MNIST framing of a white-on-black 2-D image of any size: returns float32 [28, 28].

    The ink (pixels above INK_SHARE of the brightest) bounds the crop; the crop is scaled so its
    longer side is 20 pixels, then placed so its centre of mass sits at the frame's centre
    (clamped to stay inside). A blank image gives a blank frame.
    """
    gray = np.asarray(gray, dtype=np.float32)
    peak = float(gray.max()) if gray.size else 0.0
    if peak <= 0:
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)
    rows = np.flatnonzero((gray > INK_SHARE * peak).any(axis=1))
    cols = np.flatnonzero((gray > INK_SHARE * peak).any(axis=0))
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    box = np.clip(np.asarray(resized, dtype=np.float32), 0, 255)
    total = float(box.sum())
    if total > 0:
        ys, xs = np.indices(box.shape)
        cy, cx = float((ys * box).sum()) / total, float((xs * box).sum()) / total
    else:
        cy, cx = (new_h - 1) / 2, (new_w - 1) / 2
    top = int(np.clip(round((IMAGE_SIDE - 1) / 2 - cy), 0, IMAGE_SIDE - new_h))
    left = int(np.clip(round((IMAGE_SIDE - 1) / 2 - cx), 0, IMAGE_SIDE - new_w))
    frame = np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)
    frame[top : top + new_h, left : left + new_w] = box
    return frame


def png_digit(raw: bytes, path: str, invert: str = "auto") -> DigitImage:
    """Decodes PNG bytes read from `path` into a DigitImage (see the module docstring)."""
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_PNG_PIXELS:
            raise InputDataError(
                f"{path}: PNG of {image.width}x{image.height} pixels is too large (limit {MAX_PNG_PIXELS})"
            )
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(canvas, image.convert("RGBA"))
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    except InputDataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputDataError(f"{path}: not a readable PNG image ({' '.join(str(e).split())})") from e
    inverted = _should_invert(gray, invert)
    if inverted:
        gray = 255.0 - gray
    if gray.shape != (IMAGE_SIDE, IMAGE_SIDE):
        gray = frame_digit(gray)
    return DigitImage(path, 0, gray.reshape(IMAGE_PIXELS).astype(np.float32), inverted)


def idx_digits(raw: bytes, path: str, invert: str = "auto") -> list[DigitImage]:
    """Parses a gzip IDX images file (validated by pipeline.formats.idx) into DigitImages."""
    images = parse_idx(raw, path, "images").reshape(-1, IMAGE_PIXELS).astype(np.float32)
    if invert == "auto":
        flags = images.mean(axis=1) > 127.5
    else:
        flags = np.full(len(images), invert == "yes")
    images = np.where(flags[:, None], 255.0 - images, images).astype(np.float32)
    return [DigitImage(path, i, images[i], bool(flags[i])) for i in range(len(images))]


def read_digits(path: str, invert: str = "auto") -> list[DigitImage]:
    """Reads every digit of one file (PNG or gzip IDX images); InputDataError naming it otherwise."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    raw = read_bytes(path, expected="a PNG or gzip IDX images file", max_bytes=MAX_FILE_BYTES)
    if raw.startswith(PNG_SIGNATURE):
        return [png_digit(raw, path, invert)]
    if raw.startswith(GZIP_MAGIC):
        return idx_digits(raw, path, invert)
    raise InputDataError(f"{path}: neither a PNG image nor a gzip IDX images file")
