"""Small slices of the real MNIST digits, written as IDX .gz files for tests."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from pipeline.config import DEFAULT_DATA_ROOT

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def read_real(name: str, count: int, offset: int = 0) -> np.ndarray:
    """Returns records [offset, offset+count) of the shipped MNIST file `name` as uint8."""
    with gzip.open(os.path.join(DEFAULT_DATA_ROOT, name), "rb") as f:
        f.read(16 if "images" in name else 8)  # the IDX header
        record = 784 if "images" in name else 1
        f.read(offset * record)
        data = np.frombuffer(f.read(count * record), dtype=np.uint8)
    return data.reshape(count, 28, 28) if "images" in name else data


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes `array` (uint8, 1-D labels or N x rows x cols images) as a gzipped IDX file, as
    it is: unlike pipeline.formats.idx.write_idx it writes the broken files tests feed readers."""
    magic = 0x00000801 if array.ndim == 1 else 0x00000803
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_slice(dest: str, n_train: int, n_test: int, offset: int = 0) -> str:
    """Writes the four MNIST files holding n_train / n_test real digits from `offset` into dest."""
    os.makedirs(dest, exist_ok=True)
    write_idx(os.path.join(dest, TRAIN_IMAGES), read_real(TRAIN_IMAGES, n_train, offset))
    write_idx(os.path.join(dest, TRAIN_LABELS), read_real(TRAIN_LABELS, n_train, offset))
    write_idx(os.path.join(dest, TEST_IMAGES), read_real(TEST_IMAGES, n_test, offset))
    write_idx(os.path.join(dest, TEST_LABELS), read_real(TEST_LABELS, n_test, offset))
    return dest
