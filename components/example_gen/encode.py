"""Turning validated MNIST arrays into split, serialized tf.train.Examples (Apache Beam).

Features of every example:
    image               int64 x 784  pixel values 0..255, row-major
    label               int64        0..9
    ink_density         float        fraction of pixels > 127
    ink_density_bucket  int64        np.digitize(ink_density, data.ink_density_edges), i.e. the
                                     number of edges <= ink_density (0..len(edges))

Splits: examples of the t10k files form `test`. Examples of the training files go to `eval`
when the sha256 of (image bytes + label byte) falls into bucket 0 of `eval_hash_buckets`, else
to `train`: the assignment depends only on the content, so it is the same on every run and a
digit repeated in another span lands in the same split.

The Beam pipeline does not carry the arrays: it is fed small `EncodeTask`s (a file pair, its
validated digests and a row range). Each worker reads the files itself, refuses them when
their sha256 no longer matches what was validated, and encodes its rows in one vectorised batch
(pyarrow RecordBatch -> tfx_bsl RecordBatchToExamplesEncoder).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from components.example_gen import idx
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

SPLITS = ("train", "eval", "test")
PIXELS = idx.IMAGE_ROWS * idx.IMAGE_COLS
INK_THRESHOLD = 127
METRICS_NAMESPACE = "example_gen"
DEFAULT_CHUNK_ROWS = 5000
# Decoded files a worker keeps in memory (one span's four files are ~55 MB).
_CACHE_BYTES = 256 << 20


def split_counter_name(split: str) -> str:
    """The Beam counter (namespace METRICS_NAMESPACE) counting examples written to `split`."""
    return f"examples_{split}"


# ---------------------------------------------------------------------------- numpy features

def ink_density(images: np.ndarray) -> np.ndarray:
    """float32 [N]: fraction of the 784 pixels of each N x 28 x 28 uint8 image above 127."""
    above = (images.reshape(len(images), -1) > INK_THRESHOLD).sum(axis=1)
    return (above / PIXELS).astype(np.float32)


def ink_density_bucket(density: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """int64 [N]: number of `edges` (increasing) that are <= each density."""
    # Compare in float32, the precision the density is stored with in the example.
    return np.digitize(density, np.asarray(edges, dtype=np.float32)).astype(np.int64)


def content_buckets(images: np.ndarray, labels: np.ndarray, num_buckets: int) -> np.ndarray:
    """int64 [N]: sha256(image bytes + label byte) of each example, modulo `num_buckets`."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    rows = np.concatenate([flat, labels.reshape(-1, 1).astype(np.uint8)], axis=1)
    # One hash call per record (not per pixel); ~1.6 us each.
    digests = b"".join(hashlib.sha256(row).digest()[:8] for row in rows)
    values = np.frombuffer(digests, dtype=">u8")
    return (values % np.uint64(num_buckets)).astype(np.int64)


def split_of(source: str, images: np.ndarray, labels: np.ndarray, eval_hash_buckets: int) -> np.ndarray:
    """Split name of each example ("train"/"eval" for source "train", "test" for "test")."""
    if source == "test":
        return np.full(len(labels), "test", dtype=object)
    if source != "train":
        raise ValueError(f"source must be 'train' or 'test', got {source!r}")
    is_eval = content_buckets(images, labels, eval_hash_buckets) == 0
    return np.where(is_eval, "eval", "train").astype(object)


def split_counts(source: str, images: np.ndarray, labels: np.ndarray, eval_hash_buckets: int) -> dict:
    """{"train": n, "eval": n, "test": n} for one source file pair (zeros included)."""
    names, counts = np.unique(split_of(source, images, labels, eval_hash_buckets), return_counts=True)
    result = dict.fromkeys(SPLITS, 0)
    result.update({str(n): int(c) for n, c in zip(names, counts)})
    return result


def _list_column(values: np.ndarray, width: int) -> pa.ListArray:
    """A list<...> column whose rows are consecutive `width`-long slices of flat `values`."""
    offsets = np.arange(0, len(values) + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def to_record_batch(images: np.ndarray, labels: np.ndarray, edges: Sequence[float]) -> pa.RecordBatch:
    """The four features of N examples as a RecordBatch of list columns (one row per example)."""
    n = len(labels)
    density = ink_density(images)
    return pa.RecordBatch.from_arrays(
        [
            _list_column(images.reshape(n * PIXELS).astype(np.int64), PIXELS),
            _list_column(labels.astype(np.int64), 1),
            _list_column(density, 1),
            _list_column(ink_density_bucket(density, edges), 1),
        ],
        ["image", "label", "ink_density", "ink_density_bucket"],
    )


def encode_examples(images: np.ndarray, labels: np.ndarray, edges: Sequence[float], encoder=None) -> list:
    """Serialized tf.train.Examples (list of bytes) of N images and labels, in order."""
    if encoder is None:
        from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

        encoder = RecordBatchToExamplesEncoder()
    if len(labels) == 0:
        return []
    return encoder.encode(to_record_batch(images, labels, edges))


# ---------------------------------------------------------------------------- Beam

@dataclass(frozen=True)
class EncodeTask:
    """Rows [start, end) of one validated file pair, to be encoded by one worker.

    source: "train" (split into train/eval by content hash) or "test".
    images_sha256 / labels_sha256: digests of the compressed bytes that were validated.
    """

    span: int
    source: str
    images_path: str
    labels_path: str
    images_sha256: str
    labels_sha256: str
    start: int
    end: int
    total: int


def plan_tasks(span: int, dataset: idx.MnistDataset, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> list:
    """EncodeTasks covering every row of the train and test pairs of a validated dataset."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    tasks = []
    for source, pair in (("train", dataset.train), ("test", dataset.test)):
        for start in range(0, pair.count, chunk_rows):
            tasks.append(EncodeTask(
                span=span, source=source,
                images_path=pair.images.path, labels_path=pair.labels.path,
                images_sha256=pair.images.sha256, labels_sha256=pair.labels.sha256,
                start=start, end=min(start + chunk_rows, pair.count), total=pair.count))
    return tasks


class _EncodeRangeFn(beam.DoFn):
    """EncodeTask -> serialized examples, tagged with their split name.

    Re-reads the task's files on the worker, refusing them (InputDataError) when their sha256
    differs from the validated one: the files changed after validation.
    """

    def __init__(self, eval_hash_buckets: int, ink_density_edges: Sequence[float]):
        self._eval_hash_buckets = int(eval_hash_buckets)
        self._edges = tuple(float(e) for e in ink_density_edges)

    def setup(self):
        from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

        self._encoder = RecordBatchToExamplesEncoder()
        self._cache = collections.OrderedDict()  # (path, sha256) -> array, least recent first
        self._counters = {s: beam.metrics.Metrics.counter(METRICS_NAMESPACE, split_counter_name(s))
                          for s in SPLITS}
        self._chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunks_encoded")

    def _load(self, path: str, sha256: str, kind: str) -> np.ndarray:
        key = (path, sha256)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        raw = idx.read_file_bytes(path)
        actual = hashlib.sha256(raw).hexdigest()
        if actual != sha256:
            raise InputDataError(f"{path}: file changed after validation (sha256 {actual}, "
                                 f"validated {sha256})")
        array = idx.parse_idx(raw, path, kind)
        self._cache[key] = array
        while sum(a.nbytes for a in self._cache.values()) > _CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return array

    def process(self, task):
        # `task` is an EncodeTask; left unannotated so Beam infers no coder or type check from it.
        images = self._load(task.images_path, task.images_sha256, "images")[task.start:task.end]
        labels = self._load(task.labels_path, task.labels_sha256, "labels")[task.start:task.end]
        splits = split_of(task.source, images, labels, self._eval_hash_buckets)
        records = encode_examples(images, labels, self._edges, self._encoder)
        for split in SPLITS:
            picked = np.flatnonzero(splits == split)
            if picked.size:
                self._counters[split].inc(int(picked.size))
                for i in picked:
                    yield beam.pvalue.TaggedOutput(split, records[i])
        self._chunks.inc()
        log.info("span %d %s rows %d..%d of %d encoded", task.span, task.source, task.start,
                 task.end, task.total)


class EncodeExamples(beam.PTransform):
    """Root transform: EncodeTasks -> {split name: PCollection of serialized tf.Examples}."""

    def __init__(self, tasks: Sequence[EncodeTask], eval_hash_buckets: int, ink_density_edges: Sequence[float]):
        super().__init__()
        self._tasks = list(tasks)
        self._eval_hash_buckets = eval_hash_buckets
        self._edges = tuple(ink_density_edges)

    def expand(self, pbegin):
        tagged = (
            pbegin
            | "CreateTasks" >> beam.Create(self._tasks)
            | "EncodeRanges" >> beam.ParDo(_EncodeRangeFn(self._eval_hash_buckets, self._edges))
            .with_outputs(*SPLITS)
        )
        return {split: tagged[split] for split in SPLITS}


def split_dir(output_dir: str, split: str) -> str:
    """The folder of `split` inside an Examples artifact: `<output_dir>/Split-<split>`."""
    return os.path.join(output_dir, f"Split-{split}")


class WriteSplit(beam.PTransform):
    """Serialized examples -> `<output_dir>/Split-<split>/data_tfrecord-0000i-of-0000n.gz`."""

    def __init__(self, output_dir: str, split: str, num_shards: int):
        super().__init__()
        self._prefix = os.path.join(split_dir(output_dir, split), "data_tfrecord")
        self._num_shards = int(num_shards)

    def expand(self, examples):
        return examples | "WriteToTFRecord" >> beam.io.WriteToTFRecord(
            self._prefix,
            file_name_suffix=".gz",
            num_shards=self._num_shards,
            compression_type=beam.io.filesystem.CompressionTypes.GZIP,
        )


def build_pipeline(pipeline: beam.Pipeline, tasks: Iterable[EncodeTask], output_dir: str,
                   eval_hash_buckets: int, ink_density_edges: Sequence[float], num_shards: int) -> Mapping:
    """Adds encoding and writing of every split to `pipeline`; returns the write results."""
    splits = pipeline | "EncodeExamples" >> EncodeExamples(list(tasks), eval_hash_buckets, ink_density_edges)
    return {split: splits[split] | f"WriteSplit[{split}]" >> WriteSplit(output_dir, split, num_shards)
            for split in SPLITS}
