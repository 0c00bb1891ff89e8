"""Raw data: MNIST IDX files (gzip-compressed), parsed and validated without trusting them.

The IDX format: a big-endian int32 magic number (0x00000801 for a 1-D label file, 0x00000803
for a 3-D image file; the third byte 0x08 means unsigned bytes, the fourth is the number of
dimensions), one big-endian int32 per dimension, then the raw uint8 data.

Everything here raises `InputDataError("<path>: <what is wrong>")`, one line, on any defect:
unreadable or corrupt gzip (bad CRC, truncated stream), empty file, wrong magic number, wrong
dimensions, data shorter or longer than the header declares, labels outside 0..9, and image
and label files that disagree on the record count. Reading writes nothing anywhere.

`write_idx` writes an array as such a file (atomically), for whoever makes data roots (the
scaling benchmark's transformed spans).

ExampleGen reads a data root of them (its `RawData` input, properties `spans`, `span_dirs`,
`fingerprint`); `run_local.py predict` reads IDX image files too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.core.atomic_files import write_bytes_atomic
from pipeline.core.errors import InputDataError
from pipeline.formats.examples import IMAGE_SIDE, NUM_CLASSES
from pipeline.formats.files import read_bytes

# The RawData artifact (uri: the data root; an input outside the pipeline root) and the
# properties ExampleGen reads: the spans of this run and their folders.
RAW_DATA_TYPE = "RawData"
SPANS = "spans"
SPAN_DIRS = "span_dirs"
FINGERPRINT = "fingerprint"

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IMAGE_ROWS = IMAGE_SIDE
IMAGE_COLS = IMAGE_SIDE

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
# The four files a dataset folder (flat data root or one span-N/ folder) must hold.
DATASET_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

_KINDS = {"images": IMAGES_MAGIC, "labels": LABELS_MAGIC}
# Decompress in bounded pieces: a forged header must not make us allocate what it claims.
_READ_CHUNK = 1 << 22


def _fail(path: str, what: str) -> InputDataError:
    """The one-line error for `path`; newlines in library messages are flattened."""
    return InputDataError(f"{path}: {' '.join(str(what).split())}")


def _read(stream, size: int) -> bytes:
    """Reads up to `size` bytes from `stream` in bounded chunks (less only at end of data)."""
    parts = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def parse_idx(raw: bytes, path: str, kind: str) -> np.ndarray:
    """Decodes the gzip-compressed IDX bytes `raw` read from `path`.

    kind: "images" (expects magic 0x803 and N x 28 x 28) or "labels" (magic 0x801, N labels
        in 0..9).
    Returns a read-only uint8 array: N x 28 x 28 for images, N for labels (N >= 1).
    Raises InputDataError naming `path` on any defect (see the module docstring).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if not raw:
        raise _fail(path, "file is empty")
    expected_magic = _KINDS[kind]
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") as stream:
            head = _read(stream, 4)
            if len(head) < 4:
                raise _fail(path, f"decompressed data is {len(head)} bytes, too short for an IDX header")
            (magic,) = struct.unpack(">I", head)
            if magic != expected_magic:
                raise _fail(
                    path,
                    f"magic number 0x{magic:08x}, expected 0x{expected_magic:08x} (IDX unsigned-byte {kind})",
                )
            ndim = magic & 0xFF
            dims_raw = _read(stream, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise _fail(
                    path,
                    f"IDX header truncated: {ndim} dimensions declared, "
                    f"{len(dims_raw)} of {4 * ndim} dimension bytes present",
                )
            dims = struct.unpack(f">{ndim}I", dims_raw)
            shape_text = " x ".join(str(d) for d in dims)
            if kind == "images" and dims[1:] != (IMAGE_ROWS, IMAGE_COLS):
                raise _fail(path, f"images are {shape_text}, expected N x {IMAGE_ROWS} x {IMAGE_COLS}")
            if dims[0] == 0:
                raise _fail(path, "header declares 0 records")
            size = int(np.prod(dims, dtype=np.int64))
            body = _read(stream, size)
            if len(body) != size:
                raise _fail(
                    path, f"data holds {len(body)} bytes but the header ({shape_text}) declares {size}"
                )
            # Reading to the end also makes gzip check the CRC and length of the whole stream.
            if stream.read(1):
                raise _fail(path, f"more data than the header ({shape_text}) declares")
    except gzip.BadGzipFile as e:
        raise _fail(path, f"not a valid gzip file: {e}") from e
    except EOFError as e:
        raise _fail(path, f"truncated gzip stream: {e}") from e
    except zlib.error as e:
        raise _fail(path, f"corrupt gzip data: {e}") from e
    except OSError as e:  # other low-level read failures of the gzip layer
        raise _fail(path, f"unreadable gzip data: {e}") from e
    array = np.frombuffer(body, dtype=np.uint8).reshape(dims)
    if kind == "labels":
        bad = np.flatnonzero(array >= NUM_CLASSES)
        if bad.size:
            raise _fail(
                path,
                f"label {int(array[bad[0]])} at record {int(bad[0])} is outside "
                f"0..{NUM_CLASSES - 1} ({bad.size} such labels)",
            )
    return array


def encode_idx(array: np.ndarray, compresslevel: int = 6) -> bytes:
    """The gzip-compressed IDX bytes of `array`: uint8 labels (N, each 0..9) or images
    (N x 28 x 28), N >= 1; `parse_idx` reads them back to an equal array. The gzip header's
    time stamp is 0, so equal arrays give equal bytes.

    Raises ValueError for any other dtype, shape or label value.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"IDX arrays are uint8, got {array.dtype}")
    if array.ndim == 1:
        magic = LABELS_MAGIC
        if array.size and int(array.max()) >= NUM_CLASSES:
            raise ValueError(f"labels must be 0..{NUM_CLASSES - 1}, got {int(array.max())}")
    elif array.ndim == 3 and array.shape[1:] == (IMAGE_ROWS, IMAGE_COLS):
        magic = IMAGES_MAGIC
    else:
        raise ValueError(
            f"IDX arrays are N labels or N x {IMAGE_ROWS} x {IMAGE_COLS} images, got {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("an IDX file holds at least one record")
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return gzip.compress(header + np.ascontiguousarray(array).tobytes(), compresslevel=compresslevel, mtime=0)


def write_idx(path: str, array: np.ndarray, compresslevel: int = 6) -> None:
    """Writes `array` to `path` as a gzip IDX file (see `encode_idx`), atomically: a reader
    sees the whole file or none. Raises ValueError as `encode_idx` does, OSError on write."""
    write_bytes_atomic(path, encode_idx(array, compresslevel))


def read_file_bytes(path: str) -> bytes:
    """Returns the bytes of `path`; InputDataError naming it when missing or unreadable."""
    return read_bytes(path, expected="a gzip IDX file")


@dataclass(frozen=True)
class IdxFile:
    """One parsed IDX file and the sha256 of the exact (compressed) bytes that were parsed."""

    path: str
    array: np.ndarray
    sha256: str


def read_idx(path: str, kind: str) -> IdxFile:
    """Reads and parses `path` (see `parse_idx`); InputDataError naming it on any defect."""
    raw = read_file_bytes(path)
    return IdxFile(path=path, array=parse_idx(raw, path, kind), sha256=hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class LabelledDigits:
    """A validated image file and label file holding the same number of records."""

    images: IdxFile
    labels: IdxFile

    @property
    def count(self) -> int:
        return int(self.labels.array.shape[0])

    def facts(self) -> PairFacts:
        """The pair without its arrays."""
        return PairFacts(
            images=FileFacts(self.images.path, self.images.sha256),
            labels=FileFacts(self.labels.path, self.labels.sha256),
            count=self.count,
        )


@dataclass(frozen=True)
class FileFacts:
    """A validated IDX file without its array: its path and the sha256 of the bytes checked."""

    path: str
    sha256: str


@dataclass(frozen=True)
class PairFacts:
    """A validated image and label file pair without its arrays, and its record count."""

    images: FileFacts
    labels: FileFacts
    count: int


@dataclass(frozen=True)
class DatasetFacts:
    """A validated dataset folder without its arrays (`MnistDataset.facts`): what a reader
    needs once the digits are checked (where each file is, the digest of the bytes that were
    checked, the record counts) in a few hundred bytes instead of some 55 MB per MNIST span."""

    train: PairFacts
    test: PairFacts

    def file_digests(self) -> dict:
        """File name -> sha256 of the compressed bytes that were validated."""
        return {
            os.path.basename(f.path): f.sha256
            for f in (self.train.images, self.train.labels, self.test.images, self.test.labels)
        }


def load_pair(images_path: str, labels_path: str) -> LabelledDigits:
    """Reads and validates an image file and its label file.

    Raises InputDataError naming the faulty file, or naming both when their counts disagree.
    """
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    n_images, n_labels = images.array.shape[0], labels.array.shape[0]
    if n_images != n_labels:
        raise _fail(labels_path, f"{n_labels} labels but {images_path} holds {n_images} images")
    return LabelledDigits(images=images, labels=labels)


@dataclass(frozen=True)
class MnistDataset:
    """The four validated files of one dataset folder."""

    train: LabelledDigits
    test: LabelledDigits

    def facts(self) -> DatasetFacts:
        """The dataset without its arrays."""
        return DatasetFacts(train=self.train.facts(), test=self.test.facts())

    def file_digests(self) -> dict:
        """File name -> sha256 of the compressed bytes that were validated."""
        return self.facts().file_digests()


def load_dataset(folder: str) -> MnistDataset:
    """Reads and validates the four MNIST files in `folder`.

    Every file is checked to exist before any is parsed, so a missing file is reported first.
    Raises InputDataError naming the missing or faulty file.
    """
    for name in DATASET_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise _fail(path, "file not found" if not os.path.exists(path) else "is not a regular file")
    join = lambda name: os.path.join(folder, name)  # noqa: E731
    return MnistDataset(
        train=load_pair(join(TRAIN_IMAGES), join(TRAIN_LABELS)),
        test=load_pair(join(TEST_IMAGES), join(TEST_LABELS)),
    )
