"""ExampleGen: raw-file validation, span resolution, download verification and the executor."""

import collections
import dataclasses
import glob
import gzip
import io
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from mnist_slices import write_idx, write_mnist_slice
from step_context import step_context

from components.example_gen import download, encode, executor, spans
from pipeline.config import DEFAULT_DATA_ROOT, DataConfig
from pipeline.core.errors import ConfigError, InputDataError, PipelineError
from pipeline.core.step import Artifact
from pipeline.formats import idx
from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES

EDGES = DEFAULT_INK_DENSITY_EDGES


def make_ctx(tmp_path, data_root, params=None, properties=None, name="out"):
    params = params or DataConfig(data_root=data_root)
    if properties is None:
        properties = spans.raw_data_properties(data_root, params.span, params.window_spans)
    return step_context(
        "example_gen",
        {"raw_data": Artifact(uri=data_root, type_name="RawData", properties=properties)},
        {"examples": str(tmp_path / name)},
        params=params,
        pipeline_root=str(tmp_path),
    )


def read_split(out_dir, split):
    """Serialized records of one split, over all its shards."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(out_dir, f"Split-{split}", "data_tfrecord-*-of-*.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def decode(record):
    import tensorflow as tf

    f = tf.train.Example.FromString(record).features.feature
    return (
        np.array(f["image"].int64_list.value),
        int(f["label"].int64_list.value[0]),
        float(f["ink_density"].float_list.value[0]),
        int(f["ink_density_bucket"].int64_list.value[0]),
    )


# ---------------------------------------------------------------------------- corrupt inputs


def _rewrite_gz(path, transform):
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(transform(raw))


def _flip_deflate_byte(raw):
    raw = bytearray(raw)
    raw[len(raw) // 2] ^= 0x5A
    return bytes(raw)


def _replace_content(path, content):
    with gzip.open(path, "wb") as f:
        f.write(content)


def _header(magic, *dims):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


CORRUPTIONS = {
    "truncated_gzip": (
        idx.TRAIN_IMAGES,
        lambda p: _rewrite_gz(p, lambda raw: raw[: len(raw) // 2]),
        "truncated gzip stream",
    ),
    "bit_flipped_gzip": (idx.TRAIN_IMAGES, lambda p: _rewrite_gz(p, _flip_deflate_byte), None),
    "crc_flipped": (
        idx.TEST_LABELS,
        lambda p: _rewrite_gz(p, lambda raw: raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:]),
        "CRC check failed",
    ),
    "empty_file": (idx.TEST_IMAGES, lambda p: open(p, "wb").close(), "file is empty"),
    "not_gzip": (idx.TRAIN_LABELS, lambda p: _rewrite_gz(p, gzip.decompress), "not a valid gzip file"),
    "wrong_magic": (
        idx.TRAIN_LABELS,
        lambda p: _replace_content(p, _header(0x803, 30) + bytes(30)),
        "magic number 0x00000803",
    ),
    "wrong_dims": (idx.TEST_IMAGES, lambda p: write_idx(p, np.zeros((10, 28, 27), np.uint8)), "10 x 28 x 27"),
    "short_data": (
        idx.TEST_IMAGES,
        lambda p: _replace_content(p, _header(0x803, 10, 28, 28) + bytes(784 * 9)),
        "declares 7840",
    ),
    "count_mismatch": (idx.TRAIN_LABELS, lambda p: write_idx(p, np.zeros(29, np.uint8)), "29 labels but"),
    "label_out_of_range": (
        idx.TEST_LABELS,
        lambda p: write_idx(p, np.array([1] * 9 + [10], np.uint8)),
        "label 10 at record 9",
    ),
    "missing_file": (idx.TEST_LABELS, os.remove, "file not found"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_input_names_the_file_and_writes_nothing(tmp_path, case):
    name, corrupt, fragment = CORRUPTIONS[case]
    root = write_mnist_slice(str(tmp_path / "raw"), 30, 10)
    corrupt(os.path.join(root, name))
    # Properties as the runner would record them for a flat root (the fingerprint needs the files).
    ctx = make_ctx(tmp_path, root, properties={"spans": [0], "span_dirs": [root]})
    with pytest.raises(InputDataError) as info:
        executor.run(ctx)
    message = str(info.value)
    assert message.startswith(os.path.join(root, name) + ": "), message
    assert "\n" not in message
    if fragment:
        assert fragment in message
    assert os.listdir(ctx.outputs["examples"]) == []


def test_corrupt_second_span_stops_before_anything_is_written(tmp_path):
    root = tmp_path / "raw"
    write_mnist_slice(str(root / "span-1"), 30, 10)
    write_mnist_slice(str(root / "span-2"), 30, 10, offset=30)
    bad = root / "span-2" / idx.TRAIN_IMAGES
    _rewrite_gz(str(bad), lambda raw: raw[:100])
    params = DataConfig(data_root=str(root), window_spans=2)
    ctx = make_ctx(
        tmp_path,
        str(root),
        params=params,
        properties={"spans": [1, 2], "span_dirs": [str(root / "span-1"), str(root / "span-2")]},
    )
    with pytest.raises(InputDataError, match=str(bad)):
        executor.run(ctx)
    assert os.listdir(ctx.outputs["examples"]) == []


def test_files_changed_after_fingerprint_are_refused(tmp_path):
    root = write_mnist_slice(str(tmp_path / "raw"), 30, 10)
    ctx = make_ctx(tmp_path, root)  # fingerprint taken now
    write_mnist_slice(root, 30, 10, offset=1)  # different, still valid, digits
    with pytest.raises(InputDataError, match="raw files changed since the run fingerprinted them"):
        executor.run(ctx)
    assert os.listdir(ctx.outputs["examples"]) == []


def test_empty_split_is_refused(tmp_path):
    root = write_mnist_slice(str(tmp_path / "raw"), 3, 2)
    with pytest.raises(InputDataError, match="split eval would hold no examples"):
        executor.run(make_ctx(tmp_path, root, params=DataConfig(data_root=root, eval_hash_buckets=10**9)))


def test_worker_refuses_a_file_that_changed_after_validation(tmp_path):
    root = write_mnist_slice(str(tmp_path / "raw"), 30, 10)
    dataset = idx.load_dataset(root)
    task = encode.plan_shards([(0, dataset)], 2)[0]
    write_mnist_slice(root, 30, 10, offset=5)
    fn = encode._WriteShardFn(str(tmp_path / "out"), 12, EDGES)
    fn.setup()
    with pytest.raises(InputDataError, match="file changed after validation"):
        list(fn.process(task))


def test_a_worker_error_surfaces_as_one_line_and_the_output_is_emptied(tmp_path, monkeypatch):
    root = write_mnist_slice(str(tmp_path / "raw"), 30, 10)
    plan = encode.plan_shards
    monkeypatch.setattr(
        encode,
        "plan_shards",
        lambda *a, **k: [
            dataclasses.replace(
                t, ranges=tuple(dataclasses.replace(r, labels_sha256="0" * 64) for r in t.ranges)
            )
            for t in plan(*a, **k)
        ],
    )
    ctx = make_ctx(tmp_path, root)
    with pytest.raises(InputDataError) as info:
        executor.run(ctx)
    assert str(info.value).startswith(
        os.path.join(root, idx.TRAIN_LABELS) + ": file changed after validation"
    )
    assert "\n" not in str(info.value) and "while running" not in str(info.value)
    assert os.listdir(ctx.outputs["examples"]) == []


def test_errors_of_separate_workers_are_recovered_from_their_traceback_text():
    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
        "pipeline.core.errors.InputDataError: /d/t10k.gz: file changed after validation (sha256 1)\n\n"
        "During handling of the above exception, another exception occurred:\nRuntimeError: boom"
    )
    error = executor._as_pipeline_error(RuntimeError(text))
    assert (
        type(error) is InputDataError and str(error) == "/d/t10k.gz: file changed after validation (sha256 1)"
    )
    other = executor._as_pipeline_error(RuntimeError("Pipeline failed in state FAILED:\nValueError: bad"))
    assert type(other) is PipelineError and str(other) == (
        "step example_gen: Beam pipeline failed: RuntimeError: ValueError: bad"
    )


# ---------------------------------------------------------------------------- happy path


@pytest.fixture(scope="module")
def tiny_run(tiny_mnist, tmp_path_factory):
    """One executor run on tiny_mnist: (outcome, output dir)."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    ctx = make_ctx(tmp, tiny_mnist)
    return executor.run(ctx), ctx.outputs["examples"]


def test_split_counts_add_up_and_are_recorded(tiny_run):
    outcome, out = tiny_run
    counts = outcome.execution_properties["split_counts"]
    assert counts["train"] + counts["eval"] == 240 and counts["test"] == 60
    assert 5 <= counts["eval"] <= 45  # 1/12 of 240 = 20 expected
    assert outcome.output_properties == {"examples": {"spans": [0], "split_counts": counts}}
    assert outcome.execution_properties["spans"] == [0]
    assert outcome.execution_properties["examples_per_second"] > 0
    for split in encode.SPLITS:
        assert len(read_split(out, split)) == counts[split]


def test_layout_is_the_tfx_one(tiny_run):
    _, out = tiny_run
    assert sorted(os.listdir(out)) == ["Split-eval", "Split-test", "Split-train"]
    for split in encode.SPLITS:
        assert sorted(os.listdir(os.path.join(out, f"Split-{split}"))) == [
            f"data_tfrecord-0000{i}-of-00004.gz" for i in range(4)
        ]


def test_features_round_trip_to_the_source_digits(tiny_run, tiny_mnist):
    _, out = tiny_run
    dataset = idx.load_dataset(tiny_mnist)
    for sources, pair in ((("train", "eval"), dataset.train), (("test",), dataset.test)):
        expected = collections.Counter(
            (img.tobytes(), int(lbl)) for img, lbl in zip(pair.images.array, pair.labels.array)
        )
        found = collections.Counter()
        for split in sources:
            for record in read_split(out, split):
                image, label, density, bucket = decode(record)
                assert image.shape == (784,) and image.min() >= 0 and image.max() <= 255
                assert density == pytest.approx((image > 127).mean(), abs=1e-6)
                assert bucket == int(np.digitize(np.float32(density), np.float32(EDGES)))
                found[(image.astype(np.uint8).tobytes(), label)] += 1
        assert found == expected


def test_ink_density_buckets_are_all_used_on_real_digits(tiny_run):
    _, out = tiny_run
    buckets = {decode(r)[3] for r in read_split(out, "train")}
    assert buckets == set(range(len(EDGES) + 1))


def test_split_assignment_is_deterministic(tiny_run, tiny_mnist, tmp_path):
    first_outcome, first = tiny_run
    second_outcome = executor.run(ctx := make_ctx(tmp_path, tiny_mnist))
    assert second_outcome.output_properties == first_outcome.output_properties
    # Compared decoded: the encoder's protobuf map order, and so the record bytes, may vary.
    content = lambda out, split: collections.Counter(  # noqa: E731
        (image.astype(np.uint8).tobytes(), label, density, bucket)
        for image, label, density, bucket in map(decode, read_split(out, split))
    )
    for split in encode.SPLITS:
        assert content(first, split) == content(ctx.outputs["examples"], split)
    # And it is the content hash the driver computes.
    dataset = idx.load_dataset(tiny_mnist)
    splits = encode.split_of("train", dataset.train.images.array, dataset.train.labels.array, 12)
    eval_images = {decode(r)[0].astype(np.uint8).tobytes() for r in read_split(first, "eval")}
    assert eval_images == {img.tobytes() for img in dataset.train.images.array[splits == "eval"]}


def test_window_of_spans_writes_all_their_examples(tmp_path):
    root = tmp_path / "raw"
    for number, offset in ((1, 0), (2, 40), (3, 80)):
        write_mnist_slice(str(root / f"span-{number}"), 40, 12, offset=offset)
    params = DataConfig(data_root=str(root), window_spans=2, num_shards=2)
    ctx = make_ctx(tmp_path, str(root), params=params)
    outcome = executor.run(ctx)
    counts = outcome.output_properties["examples"]["split_counts"]
    assert outcome.output_properties["examples"]["spans"] == [2, 3]
    assert counts["train"] + counts["eval"] == 80 and counts["test"] == 24
    labels = sorted(decode(r)[1] for s in ("train", "eval") for r in read_split(ctx.outputs["examples"], s))
    expected = np.concatenate([idx.load_dataset(str(root / f"span-{n}")).train.labels.array for n in (2, 3)])
    assert labels == sorted(expected.tolist())
    assert len(os.listdir(os.path.join(ctx.outputs["examples"], "Split-test"))) == 2


def test_spans_resolved_from_the_uri_when_properties_are_absent(tmp_path):
    root = tmp_path / "raw"
    write_mnist_slice(str(root / "span-4"), 24, 6)
    write_mnist_slice(str(root / "span-7"), 36, 6, offset=24)
    ctx = make_ctx(
        tmp_path, str(root), params=DataConfig(data_root=str(root), span=4, num_shards=1), properties={}
    )
    outcome = executor.run(ctx)
    assert outcome.execution_properties["spans"] == [4]
    counts = outcome.execution_properties["split_counts"]
    assert counts["train"] + counts["eval"] == 24


def test_mismatched_span_properties_are_a_config_error(tmp_path):
    root = write_mnist_slice(str(tmp_path / "raw"), 30, 10)
    ctx = make_ctx(tmp_path, root, properties={"spans": [0, 1], "span_dirs": [root]})
    with pytest.raises(ConfigError, match="must be non-empty and of equal length"):
        executor.run(ctx)


# ---------------------------------------------------------------------------- features


def test_ink_density_and_buckets_are_vectorised_and_exact():
    images = np.zeros((3, 28, 28), np.uint8)
    images[1].flat[:392] = 128  # half the pixels above 127
    images[2].flat[:100] = 127  # exactly 127 is not ink
    density = encode.ink_density(images)
    assert density.tolist() == [0.0, 0.5, 0.0]
    assert encode.ink_density_bucket(np.float32([0.05, 0.10, 0.13, 0.5]), EDGES).tolist() == [0, 1, 1, 4]


def test_content_buckets_depend_on_label_and_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 2000, dtype=np.uint8)
    buckets = encode.content_buckets(images, labels, 12)
    assert buckets.min() >= 0 and buckets.max() <= 11
    assert 2000 / 12 * 0.6 < (buckets == 0).sum() < 2000 / 12 * 1.4
    relabelled = encode.content_buckets(images, (labels + 1) % 10, 12)
    assert (relabelled != buckets).mean() > 0.8


# ---------------------------------------------------------------------------- spans


def _flat(root):
    return write_mnist_slice(str(root), 2, 1)


def test_flat_root_is_span_zero(tmp_path):
    _flat(tmp_path)
    assert spans.resolve_spans(str(tmp_path), None, 1) == [(0, str(tmp_path))]
    assert spans.resolve_spans(str(tmp_path), 0, 1) == [(0, str(tmp_path))]
    with pytest.raises(ConfigError, match=r"data\.span: no span 3 .*available: 0"):
        spans.resolve_spans(str(tmp_path), 3, 1)
    with pytest.raises(ConfigError, match=r"data\.window_spans: 2 spans requested"):
        spans.resolve_spans(str(tmp_path), None, 2)


def test_span_folders_newest_first_and_windows(tmp_path):
    for n in (2, 10, 3):  # numeric, not lexical, order
        (tmp_path / f"span-{n}").mkdir()
    (tmp_path / "span-x").mkdir()  # not a span folder: ignored
    (tmp_path / "span-5").write_text("a file, not a folder")  # ignored too
    root = str(tmp_path)
    sd = lambda n: (n, os.path.join(root, f"span-{n}"))  # noqa: E731
    assert spans.resolve_spans(root, None, 1) == [sd(10)]
    assert spans.resolve_spans(root, None, 3) == [sd(2), sd(3), sd(10)]
    assert spans.resolve_spans(root, 3, 2) == [sd(2), sd(3)]
    with pytest.raises(
        ConfigError, match=r"data\.window_spans: 3 spans requested ending at span 3, .* only 2"
    ):
        spans.resolve_spans(root, 3, 3)
    with pytest.raises(ConfigError, match="data.span: no span 4"):
        spans.resolve_spans(root, 4, 1)
    with pytest.raises(ConfigError, match="data.window_spans: must be >= 1"):
        spans.resolve_spans(root, None, 0)


@pytest.mark.parametrize(
    "layout,fragment",
    [
        ("missing", "no directory at"),
        ("empty", "holds neither the MNIST files"),
        ("both", "holds both span-N/ folders and MNIST files"),
        ("duplicate", "two folders for span 1"),
    ],
)
def test_unusable_data_roots_are_config_errors(tmp_path, layout, fragment):
    root = tmp_path / "root"
    if layout != "missing":
        root.mkdir()
    if layout == "both":
        _flat(root)
        (root / "span-1").mkdir()
    if layout == "duplicate":
        (root / "span-1").mkdir()
        (root / "span-01").mkdir()
    with pytest.raises(ConfigError, match=r"config key data\.data_root: .*" + fragment):
        spans.resolve_spans(str(root), None, 1)


def test_fingerprint_follows_content_not_location(tmp_path):
    a, b = _flat(tmp_path / "a"), _flat(tmp_path / "b")
    fp_a = spans.fingerprint_spans([(0, a)])
    assert fp_a == spans.fingerprint_spans([(0, b)])
    assert fp_a != spans.fingerprint_spans([(1, a)])
    assert fp_a == spans.fingerprint_digests([(0, idx.load_dataset(a).file_digests())])
    write_idx(os.path.join(b, idx.TEST_LABELS), np.array([9], np.uint8))
    assert fp_a != spans.fingerprint_spans([(0, b)])
    os.remove(os.path.join(b, idx.TEST_LABELS))
    with pytest.raises(InputDataError, match=idx.TEST_LABELS + ": file not found"):
        spans.fingerprint_spans([(0, b)])


def test_raw_data_properties(tmp_path):
    for n in (1, 2):
        write_mnist_slice(str(tmp_path / f"span-{n}"), 2, 1, offset=n)
    props = spans.raw_data_properties(str(tmp_path), None, 2)
    assert props["spans"] == [1, 2]
    assert props["span_dirs"] == [str(tmp_path / "span-1"), str(tmp_path / "span-2")]
    assert len(props["fingerprint"]) == 64


# ---------------------------------------------------------------------------- download

REAL_LABELS = {
    name: Path(DEFAULT_DATA_ROOT, name).read_bytes() for name in (idx.TRAIN_LABELS, idx.TEST_LABELS)
}
MIRROR_A, MIRROR_B = "https://mirror-a.invalid/mnist/", "https://mirror-b.invalid/mnist/"


def _tampered(compressed):
    content = bytearray(gzip.decompress(compressed))
    content[-1] = (content[-1] + 1) % 10  # still a valid IDX label file
    return gzip.compress(bytes(content))


def _serve(monkeypatch, table):
    """Makes download.fetch answer from `table` (url -> bytes or exception); records calls."""
    calls = []

    def fake_fetch(url, timeout=None, max_bytes=None):
        calls.append(url)
        answer = table.get(url, urllib.error.HTTPError(url, 404, "Not Found", None, None))
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(download, "fetch", fake_fetch)
    return calls


def test_download_accepts_a_verified_file(tmp_path, monkeypatch):
    name = idx.TEST_LABELS
    calls = _serve(monkeypatch, {MIRROR_A + name: REAL_LABELS[name]})
    assert download.download_file(name, str(tmp_path), [MIRROR_A, MIRROR_B]) == MIRROR_A
    assert (tmp_path / name).read_bytes() == REAL_LABELS[name]
    assert calls == [MIRROR_A + name]
    assert os.listdir(tmp_path) == [name]
    # A verified copy already present is kept without fetching again.
    assert download.download_file(name, str(tmp_path), [MIRROR_A]) == "present"
    assert calls == [MIRROR_A + name]


def test_download_rejects_tampered_content_and_leaves_nothing(tmp_path, monkeypatch):
    name = idx.TEST_LABELS
    _serve(monkeypatch, {MIRROR_A + name: _tampered(REAL_LABELS[name]), MIRROR_B + name: b"<html>oops"})
    with pytest.raises(InputDataError) as info:
        download.download_file(name, str(tmp_path), [MIRROR_A, MIRROR_B])
    message = str(info.value)
    assert message.startswith(str(tmp_path / name) + ": no mirror served")
    assert "content sha256" in message and "not a valid gzip file" in message and "\n" not in message
    assert os.listdir(tmp_path) == []


def test_download_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    name = idx.TRAIN_LABELS
    calls = _serve(
        monkeypatch,
        {
            MIRROR_A + name: urllib.error.URLError("Name or service not known"),
            MIRROR_B + name: REAL_LABELS[name],
        },
    )
    assert download.download_file(name, str(tmp_path), [MIRROR_A, MIRROR_B]) == MIRROR_B
    assert calls == [MIRROR_A + name, MIRROR_B + name]
    assert (tmp_path / name).read_bytes() == REAL_LABELS[name]


def test_download_replaces_a_corrupt_local_copy(tmp_path, monkeypatch):
    name = idx.TEST_LABELS
    (tmp_path / name).write_bytes(_tampered(REAL_LABELS[name]))
    _serve(monkeypatch, {MIRROR_B + name: REAL_LABELS[name]})
    assert download.download_file(name, str(tmp_path), [MIRROR_A, MIRROR_B]) == MIRROR_B
    assert (tmp_path / name).read_bytes() == REAL_LABELS[name]


def test_fetch_goes_through_urllib_and_caps_the_size(monkeypatch):
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    seen = []

    def fake_urlopen(url, timeout):
        seen.append((url, timeout))
        return Response(b"x" * 100)

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    assert download.fetch("https://m/f.gz", timeout=5) == b"x" * 100
    assert seen == [("https://m/f.gz", 5)]
    with pytest.raises(OSError, match="larger than 10 bytes"):
        download.fetch("https://m/f.gz", max_bytes=10)


def test_download_command_exit_codes(tmp_path, monkeypatch, capsys):
    table = {MIRROR_A + n: Path(DEFAULT_DATA_ROOT, n).read_bytes() for n in idx.DATASET_FILES}
    _serve(monkeypatch, table)
    assert download.main(["--dest", str(tmp_path / "ok"), "--mirror", MIRROR_A]) == 0
    assert sorted(os.listdir(tmp_path / "ok")) == sorted(idx.DATASET_FILES)
    _serve(monkeypatch, {})
    assert download.main(["--dest", str(tmp_path / "bad"), "--mirror", MIRROR_A]) == 3
    assert "no mirror served a file with the pinned checksum" in capsys.readouterr().err
    assert os.listdir(tmp_path / "bad") == []


def test_pinned_checksums_match_the_shipped_files():
    for name, expected in download.CHECKSUMS.items():
        with open(os.path.join(DEFAULT_DATA_ROOT, name), "rb") as f:
            assert download.content_sha256(f.read()) == expected


def test_shard_plan_covers_every_row_of_every_span_once():
    Pair = collections.namedtuple("Pair", "images labels count")
    File = collections.namedtuple("File", "path sha256")
    Dataset = collections.namedtuple("Dataset", "train test")

    def dataset(name, train, test):
        return Dataset(
            Pair(File(f"{name}/ti", "a"), File(f"{name}/tl", "b"), train),
            Pair(File(f"{name}/si", "c"), File(f"{name}/sl", "d"), test),
        )

    tasks = encode.plan_shards([(1, dataset("s1", 103, 7)), (2, dataset("s2", 50, 20))], 4)
    assert [(t.source, t.shard) for t in tasks] == [(s, i) for s in ("train", "test") for i in range(4)]
    for source, totals in (("train", {1: 103, 2: 50}), ("test", {1: 7, 2: 20})):
        shards = [t for t in tasks if t.source == source]
        # Shard after shard, the rows are every span's rows once, span after span: each shard
        # reads only the spans its rows lie in.
        covered = [(r.span, i) for t in shards for r in t.ranges for i in range(r.start, r.end)]
        assert covered == [(span, i) for span, total in totals.items() for i in range(total)]
        sizes = [sum(r.end - r.start for r in t.ranges) for t in shards]
        assert max(sizes) - min(sizes) <= 1
        assert all(r.total == totals[r.span] for t in shards for r in t.ranges)
    with pytest.raises(ValueError, match="num_shards"):
        encode.plan_shards([(1, dataset("s1", 3, 3))], 0)


def test_a_worker_decodes_each_span_once_however_many_spans_its_shards_cover(tmp_path, monkeypatch):
    roots = [write_mnist_slice(str(tmp_path / f"span-{k}"), 30, 10, offset=40 * k) for k in range(3)]
    validated = [(k, idx.load_dataset(root).facts()) for k, root in enumerate(roots)]
    # The worker may keep one span's training pair decoded, no more.
    monkeypatch.setattr(encode, "_CACHE_BYTES", 30 * 28 * 28 + 30)
    parsed = collections.Counter()
    real_parse = idx.parse_idx

    def counting_parse(raw, path, kind):
        parsed[path] += 1
        return real_parse(raw, path, kind)

    monkeypatch.setattr(idx, "parse_idx", counting_parse)
    fn = encode._WriteShardFn(str(tmp_path / "out"), 12, EDGES)
    fn.setup()
    written = collections.Counter()
    for task in encode.plan_shards(validated, 2):
        for split, n in fn.process(task):
            written[split] += n
    assert dict(parsed) == {os.path.join(root, name): 1 for root in roots for name in idx.DATASET_FILES}
    assert written["train"] + written["eval"] == 90 and written["test"] == 30


def test_a_shard_failing_mid_write_leaves_neither_a_final_nor_a_temporary_file(tmp_path, monkeypatch):
    root = write_mnist_slice(str(tmp_path / "raw"), 40, 10)
    task = encode.plan_shards([(0, idx.load_dataset(root))], 1)[0]
    fn = encode._WriteShardFn(str(tmp_path / "out"), 12, EDGES, chunk_rows=10)
    fn.setup()
    calls = []

    def encode_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk gone")
        return real_encode(*args, **kwargs)

    real_encode = encode.encode_examples
    monkeypatch.setattr(encode, "encode_examples", encode_then_fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        list(fn.process(task))
    left = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "out") for f in files]
    assert left == []
    monkeypatch.setattr(encode, "encode_examples", real_encode)
    written = dict(fn.process(task))
    assert written["train"] + written["eval"] == 40
    assert len(read_split(str(tmp_path / "out"), "train")) == written["train"]
    assert sorted(os.listdir(tmp_path / "out" / "Split-eval")) == ["data_tfrecord-00000-of-00001.gz"]
