"""The IDX parser and writer: every defect is a one-line InputDataError naming the file; valid files round-trip."""

import gzip
import hashlib
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnist_slices import write_idx

from pipeline.core.errors import InputDataError
from pipeline.formats import idx

PATH = "/data/some-file.gz"


def idx_bytes(magic: int, dims, body: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def assert_input_error(raw: bytes, kind: str, *fragments: str) -> InputDataError:
    with pytest.raises(InputDataError) as info:
        idx.parse_idx(raw, PATH, kind)
    message = str(info.value)
    assert message.startswith(PATH + ": ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return info.value


def test_valid_images_and_labels_parse_to_uint8_arrays():
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    parsed = idx.parse_idx(gz(idx_bytes(idx.IMAGES_MAGIC, (2, 28, 28), images.tobytes())), PATH, "images")
    assert parsed.dtype == np.uint8 and parsed.shape == (2, 28, 28)
    np.testing.assert_array_equal(parsed, images)
    labels = idx.parse_idx(gz(idx_bytes(idx.LABELS_MAGIC, (3,), bytes([0, 9, 4]))), PATH, "labels")
    assert labels.tolist() == [0, 9, 4]


def test_empty_file():
    assert_input_error(b"", "labels", "file is empty")


def test_not_gzip():
    assert_input_error(idx_bytes(idx.LABELS_MAGIC, (1,), b"\x01"), "labels", "not a valid gzip file")


def test_truncated_gzip():
    raw = gz(idx_bytes(idx.IMAGES_MAGIC, (3, 28, 28), os.urandom(3 * 784)))
    assert_input_error(raw[: len(raw) // 2], "images", "truncated gzip stream")


def test_crc_mismatch():
    raw = bytearray(gz(idx_bytes(idx.LABELS_MAGIC, (4,), bytes([1, 2, 3, 4]))))
    raw[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    assert_input_error(bytes(raw), "labels", "CRC check failed")


def test_decompressed_empty():
    assert_input_error(gz(b""), "labels", "too short for an IDX header")


def test_wrong_magic_names_both_numbers():
    raw = gz(idx_bytes(idx.IMAGES_MAGIC, (1, 28, 28), bytes(784)))
    assert_input_error(raw, "labels", "0x00000803", "expected 0x00000801")


def test_non_ubyte_type_is_refused():
    raw = gz(idx_bytes(0x00000D03, (1, 28, 28), bytes(784 * 4)))  # float32 images
    assert_input_error(raw, "images", "magic number 0x00000d03")


def test_wrong_dimensions():
    raw = gz(idx_bytes(idx.IMAGES_MAGIC, (2, 28, 27), bytes(2 * 28 * 27)))
    assert_input_error(raw, "images", "2 x 28 x 27", "expected N x 28 x 28")


def test_truncated_header():
    raw = gz(struct.pack(">I", idx.IMAGES_MAGIC) + struct.pack(">I", 5))
    assert_input_error(raw, "images", "header truncated")


def test_data_shorter_than_header():
    raw = gz(idx_bytes(idx.IMAGES_MAGIC, (3, 28, 28), bytes(2 * 784)))
    assert_input_error(raw, "images", "holds 1568 bytes", "declares 2352")


def test_data_longer_than_header():
    raw = gz(idx_bytes(idx.LABELS_MAGIC, (2,), bytes([1, 2, 3])))
    assert_input_error(raw, "labels", "more data than the header")


def test_zero_records():
    assert_input_error(gz(idx_bytes(idx.LABELS_MAGIC, (0,), b"")), "labels", "0 records")


def test_label_out_of_range_names_record():
    raw = gz(idx_bytes(idx.LABELS_MAGIC, (4,), bytes([1, 2, 10, 255])))
    assert_input_error(raw, "labels", "label 10 at record 2", "2 such labels")


def test_forged_huge_header_does_not_allocate_it():
    # 4e9 x 28 x 28 claimed, 784 bytes present: reported as short data, not a MemoryError.
    raw = gz(idx_bytes(idx.IMAGES_MAGIC, (4_000_000_000, 28, 28), bytes(784)))
    assert_input_error(raw, "images", "holds 784 bytes")


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        idx.parse_idx(b"x", PATH, "pictures")


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(InputDataError, match="nope.gz: file not found"):
        idx.read_idx(str(tmp_path / "nope.gz"), "labels")
    with pytest.raises(InputDataError, match="is a directory"):
        idx.read_idx(str(tmp_path), "labels")


def test_read_idx_digest_is_of_the_bytes_on_disk(tmp_path):
    raw = gz(idx_bytes(idx.LABELS_MAGIC, (2,), bytes([3, 4])))
    path = tmp_path / "l.gz"
    path.write_bytes(raw)
    parsed = idx.read_idx(str(path), "labels")
    assert parsed.sha256 == hashlib.sha256(raw).hexdigest()
    assert parsed.array.tolist() == [3, 4]


# ---------------------------------------------------------------------------- properties

_MAGICS = st.sampled_from(
    [idx.IMAGES_MAGIC, idx.LABELS_MAGIC, 0x00000802, 0x00000800, 0x00000D03, 0x08030000, 0xFFFFFFFF]
)


@st.composite
def forged_files(draw):
    """IDX-like content with plausible-but-random headers, optionally gzipped and damaged."""
    magic = draw(_MAGICS | st.integers(0, 2**32 - 1))
    dims = draw(
        st.lists(
            st.one_of(st.integers(0, 40), st.sampled_from([28, 2**31, 2**32 - 1])), min_size=0, max_size=4
        )
    )
    body = draw(st.binary(max_size=3000))
    content = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body
    content = content[: draw(st.integers(0, len(content)))]
    raw = gz(content) if draw(st.booleans()) else content
    if raw and draw(st.booleans()):
        position = draw(st.integers(0, len(raw) - 1))
        raw = raw[:position] + bytes([raw[position] ^ draw(st.integers(1, 255))]) + raw[position + 1 :]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=forged_files(), kind=st.sampled_from(["images", "labels"]))
def test_arbitrary_bytes_raise_only_input_data_error(raw, kind):
    try:
        array = idx.parse_idx(raw, PATH, kind)
    except InputDataError as e:
        assert str(e).startswith(PATH + ": ") and "\n" not in str(e)
        return
    # Whatever parses must satisfy every promise of the parser.
    assert array.dtype == np.uint8 and len(array) >= 1
    if kind == "images":
        assert array.shape[1:] == (28, 28)
    else:
        assert array.ndim == 1 and int(array.max()) <= 9


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_valid_generated_files_round_trip(tmp_path_factory, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder = tmp_path_factory.mktemp("roundtrip")
    write_idx(str(folder / "i.gz"), images)
    write_idx(str(folder / "l.gz"), labels)
    pair = idx.load_pair(str(folder / "i.gz"), str(folder / "l.gz"))
    np.testing.assert_array_equal(pair.images.array, images)
    np.testing.assert_array_equal(pair.labels.array, labels)
    assert pair.count == n


# ---------------------------------------------------------------------------- the writer


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_written_files_read_back_equal_with_the_digest_of_their_bytes(tmp_path_factory, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder = tmp_path_factory.mktemp("written")
    idx.write_idx(str(folder / "i.gz"), images)
    idx.write_idx(str(folder / "l.gz"), labels)
    pair = idx.load_pair(str(folder / "i.gz"), str(folder / "l.gz"))
    np.testing.assert_array_equal(pair.images.array, images)
    np.testing.assert_array_equal(pair.labels.array, labels)
    assert pair.images.sha256 == hashlib.sha256((folder / "i.gz").read_bytes()).hexdigest()
    assert [p.name for p in folder.iterdir()] in (["i.gz", "l.gz"], ["l.gz", "i.gz"])  # no temporary left


def test_encoding_is_deterministic_and_level_independent_on_read():
    images = np.arange(3 * 784, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    assert idx.encode_idx(images) == idx.encode_idx(images.copy())
    for level in (1, 9):
        np.testing.assert_array_equal(idx.parse_idx(idx.encode_idx(images, level), PATH, "images"), images)


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((2, 28, 28), np.int64), "uint8"),
        (np.zeros((2, 28, 27), np.uint8), "(2, 28, 27)"),
        (np.zeros((2, 3), np.uint8), "(2, 3)"),
        (np.array([1, 10], np.uint8), "labels must be 0..9, got 10"),
        (np.zeros((0,), np.uint8), "at least one record"),
    ],
)
def test_writer_refuses_what_the_reader_would_refuse(tmp_path, array, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        idx.write_idx(str(tmp_path / "x.gz"), array)
    assert list(tmp_path.iterdir()) == []
