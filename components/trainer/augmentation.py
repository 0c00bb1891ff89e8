"""Random distortions of training digits, applied inside the training graph (never at serving).

Each digit of a batch [N, 28, 28, 1] (float, 0..1) gets, independently:
- an affine distortion: rotation by up to `augment_max_rotation` degrees, a shift by up to
  `augment_max_shift` pixels along each axis and a zoom by a factor in 1 +- `augment_max_scale`,
  about the image centre;
- then, when `augment_elastic_alpha` > 0, an elastic distortion (Simard, Steinkraus and Platt,
  "Best practices for convolutional neural networks applied to visual document analysis",
  ICDAR 2003): a random displacement field, uniform in [-1, 1] per pixel and axis, smoothed by
  a Gaussian of `augment_elastic_sigma` pixels and scaled by alpha pixels.
Both resample bilinearly; pixels that come from outside the image are 0 (background).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from pipeline.formats.examples import IMAGE_SIDE

# Keys read here and their defaults (the model's too); a 0 switches its distortion off.
AUGMENTATION_OFF = {
    "augment_max_shift": 0.0,  # pixels; each training digit is shifted by up to this much
    "augment_max_rotation": 0.0,  # degrees; ... and rotated by up to this much
    "augment_max_scale": 0.0,  # ... and zoomed by a factor in 1 +- this
    "augment_elastic_alpha": 0.0,  # pixels; ... and elastically distorted this strongly
    "augment_elastic_sigma": 4.0,  # pixels; the smoothness of that distortion
}


# The strength settings (the sigma only shapes the elastic field).
_STRENGTHS = ("augment_max_shift", "augment_max_rotation", "augment_max_scale", "augment_elastic_alpha")


def is_on(hp: Mapping[str, Any]) -> bool:
    """True when `hp` asks for any distortion."""
    return any(hp.get(key, 0.0) for key in _STRENGTHS)


def affine_transforms(angles: tf.Tensor, shift_x: tf.Tensor, shift_y: tf.Tensor, scales=None) -> tf.Tensor:
    """[N, 8] projective transforms (ImageProjectiveTransformV3's convention: output pixel (x, y)
    reads input pixel (t0 x + t1 y + t2, t3 x + t4 y + t5)) that zoom each image by `scales`
    [N] (None: 1) and rotate it by `angles` [N] (radians, counter-clockwise as displayed) about
    its centre, after shifting it right by `shift_x` [N] and down by `shift_y` [N] pixels."""
    inverse_scale = tf.ones_like(angles) if scales is None else 1.0 / scales
    cos, sin = tf.cos(angles) * inverse_scale, tf.sin(angles) * inverse_scale
    centre = (IMAGE_SIDE - 1) / 2.0
    # input = R(angle) (output - centre) / scale + centre - shift.
    offset_x = centre - cos * centre + sin * centre - shift_x
    offset_y = centre - sin * centre - cos * centre - shift_y
    zeros = tf.zeros_like(angles)
    return tf.stack([cos, -sin, offset_x, sin, cos, offset_y, zeros, zeros], axis=1)


def transform_images(
    images: tf.Tensor, angles: tf.Tensor, shift_x: tf.Tensor, shift_y: tf.Tensor, scales=None
) -> tf.Tensor:
    """`images` [N, 28, 28, 1] under `affine_transforms(angles, shift_x, shift_y, scales)`;
    bilinear, zeros fill the uncovered border. One batched op."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=affine_transforms(angles, shift_x, shift_y, scales),
        output_shape=[IMAGE_SIDE, IMAGE_SIDE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def gaussian_matrix(size: int, sigma: float) -> tf.Tensor:
    """[size, size] matrix that Gaussian-smooths a length-`size` signal (weights over +-3 sigma,
    normalised over the full kernel: outside the signal counts as 0)."""
    radius = int(math.ceil(3.0 * sigma))
    total = sum(math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1))
    rows = [
        [
            math.exp(-0.5 * ((i - j) / sigma) ** 2) / total if abs(i - j) <= radius else 0.0
            for j in range(size)
        ]
        for i in range(size)
    ]
    return tf.constant(rows, tf.float32)


def smooth_fields(fields: tf.Tensor, sigma: float) -> tf.Tensor:
    """Gaussian-smooths each channel of `fields` [N, H, W, C] along both image axes (zero
    outside); two small matrix products."""
    rows = gaussian_matrix(fields.shape[1], sigma)
    cols = gaussian_matrix(fields.shape[2], sigma)
    return tf.einsum("ij,njkc,lk->nilc", rows, fields, cols)


# Zero border width around an image being warped: a sample whose top-left neighbour is clipped
# into it reads background at all four neighbours.
_BORDER = 2


def _pixel_grid(height: int, width: int):
    """(x, y) coordinates of every pixel, each [1, H, W] float32."""
    grid_y, grid_x = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    return grid_x[None], grid_y[None]


def sample_bilinear(images: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[N, H, W, 1]: output pixel (y, x) of image n is `images` [N, H, W, 1] read bilinearly at
    (y[n, y, x], x[n, y, x]) ([N, H, W] each); 0 outside the image."""
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    x0 = tf.clip_by_value(tf.floor(x), -_BORDER, float(width))
    y0 = tf.clip_by_value(tf.floor(y), -_BORDER, float(height))
    wx = tf.clip_by_value(x - x0, 0.0, 1.0)
    wy = tf.clip_by_value(y - y0, 0.0, 1.0)
    stride = width + 2 * _BORDER
    padded = tf.reshape(
        tf.pad(images[..., 0], [[0, 0], [_BORDER, _BORDER], [_BORDER, _BORDER]]),
        [n, (height + 2 * _BORDER) * stride],
    )
    top_left = tf.cast(y0 + _BORDER, tf.int32) * stride + tf.cast(x0 + _BORDER, tf.int32)
    corners = tf.gather(
        padded,
        tf.stack([top_left, top_left + 1, top_left + stride, top_left + stride + 1], axis=-1),
        batch_dims=1,
    )
    top = corners[..., 0] + wx * (corners[..., 1] - corners[..., 0])
    bottom = corners[..., 2] + wx * (corners[..., 3] - corners[..., 2])
    return (top + wy * (bottom - top))[..., None]


def augment(images: tf.Tensor, hp: Mapping[str, Any]) -> tf.Tensor:
    """`images` [N, 28, 28, 1] with the distortions `hp` configures (see the module docstring),
    drawn per image; `images` unchanged when `hp` asks for none. With an elastic distortion,
    the affine one and it are resampled once (one interpolation, one blur): each output pixel
    reads the input where the affine transform sends it, moved by the displacement field."""
    if not is_on(hp):
        return images
    hp = {**AUGMENTATION_OFF, **{k: v for k, v in hp.items() if k in AUGMENTATION_OFF}}
    n = tf.shape(images)[0]
    max_shift, max_scale = float(hp["augment_max_shift"]), float(hp["augment_max_scale"])
    angles = tf.random.uniform([n], -1.0, 1.0) * (float(hp["augment_max_rotation"]) * math.pi / 180.0)
    shift_x = tf.random.uniform([n], -1.0, 1.0) * max_shift
    shift_y = tf.random.uniform([n], -1.0, 1.0) * max_shift
    scales = 1.0 + tf.random.uniform([n], -1.0, 1.0) * max_scale if max_scale else None
    alpha = float(hp["augment_elastic_alpha"])
    if not alpha:
        return transform_images(images, angles, shift_x, shift_y, scales)
    t = affine_transforms(angles, shift_x, shift_y, scales)[:, :, None, None]
    noise = tf.random.uniform([n, images.shape[1], images.shape[2], 2], -1.0, 1.0)
    displacement = smooth_fields(noise, float(hp["augment_elastic_sigma"])) * alpha
    grid_x, grid_y = _pixel_grid(images.shape[1], images.shape[2])
    x = t[:, 0] * grid_x + t[:, 1] * grid_y + t[:, 2] + displacement[..., 0]
    y = t[:, 3] * grid_x + t[:, 4] * grid_y + t[:, 5] + displacement[..., 1]
    return sample_bilinear(images, x, y)
