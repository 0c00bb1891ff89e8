"""28x28 digit images as PNG `data:` URIs, so the report embeds them without separate files."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from pipeline.formats.examples import IMAGE_SIDE, MAX_PIXEL


def png_data_uri(pixels) -> str:
    """Encodes one digit (784 values or 28x28, pixel values 0..255) as a grayscale PNG data URI.

    Values are rounded and clipped to 0..255. Raises ValueError for any other size or for
    non-finite values.
    """
    array = np.asarray(pixels, dtype=np.float64)
    if array.size != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"a digit image has {IMAGE_SIDE * IMAGE_SIDE} pixels, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("digit image holds non-finite pixel values")
    image = np.clip(np.rint(array), 0, MAX_PIXEL).astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
