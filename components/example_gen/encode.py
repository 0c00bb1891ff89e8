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

The Beam pipeline carries neither the arrays nor the records: it is fed one small `ShardTask`
per output shard (file pairs, their validated digests and row ranges). Each worker reads the
files itself, refuses them when their sha256 no longer matches what was validated, encodes its
rows in vectorised batches (pyarrow RecordBatch -> tfx_bsl RecordBatchToExamplesEncoder) and
writes its shard files itself with TensorFlow's TFRecordWriter, so no record passes through a
Beam shuffle.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.core.errors import InputDataError
from pipeline.formats import idx
from pipeline.formats.examples import (
    IMAGE_KEY,
    IMAGE_PIXELS,
    INK_DENSITY_BUCKET_KEY,
    INK_DENSITY_KEY,
    LABEL_KEY,
    shard_path,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "eval", "test")
INK_THRESHOLD = 127
METRICS_NAMESPACE = "example_gen"
DEFAULT_CHUNK_ROWS = 5000
# GZIP level 1: a third of level 6's time for files ~15% larger (seen on MNIST: 0.5 s vs 1.5 s
# and 14.4 MB vs 12.6 MB for the training digits); readers need nothing special.
_GZIP_LEVEL = 1
# Decoded files a worker keeps in memory: one span's training images and labels (~47 MB for
# MNIST), so consecutive shards that share a span decode it once, and the memory of a worker
# does not grow with the number of spans (each shard reads its spans one after the other).
_CACHE_BYTES = 64 << 20


def split_counter_name(split: str) -> str:
    """The Beam counter (namespace METRICS_NAMESPACE) counting examples written to `split`."""
    return f"examples_{split}"


# ---------------------------------------------------------------------------- numpy features


def ink_density(images: np.ndarray) -> np.ndarray:
    """float32 [N]: fraction of the 784 pixels of each N x 28 x 28 uint8 image above 127."""
    above = (images.reshape(len(images), -1) > INK_THRESHOLD).sum(axis=1)
    return (above / IMAGE_PIXELS).astype(np.float32)


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
            _list_column(images.reshape(n * IMAGE_PIXELS).astype(np.int64), IMAGE_PIXELS),
            _list_column(labels.astype(np.int64), 1),
            _list_column(density, 1),
            _list_column(ink_density_bucket(density, edges), 1),
        ],
        [IMAGE_KEY, LABEL_KEY, INK_DENSITY_KEY, INK_DENSITY_BUCKET_KEY],
    )


def encode_examples(images: np.ndarray, labels: np.ndarray, edges: Sequence[float], encoder=None) -> list:
    """Serialized tf.train.Examples (list of bytes) of N images and labels, in order."""
    if encoder is None:
        encoder = RecordBatchToExamplesEncoder()
    if len(labels) == 0:
        return []
    return encoder.encode(to_record_batch(images, labels, edges))


# ---------------------------------------------------------------------------- Beam


@dataclass(frozen=True)
class RowRange:
    """Rows [start, end) of one validated file pair of one span.

    images_sha256 / labels_sha256: digests of the compressed bytes that were validated.
    """

    span: int
    images_path: str
    labels_path: str
    images_sha256: str
    labels_sha256: str
    start: int
    end: int
    total: int


@dataclass(frozen=True)
class ShardTask:
    """Shard `shard` of `num_shards` of the splits made from `source`, written by one worker.

    source: "train" (writes shard `shard` of both `train` and `eval`) or "test".
    ranges: the rows of each span that go into this shard (only spans it has rows of), in
        span order.
    """

    source: str
    shard: int
    num_shards: int
    ranges: tuple


def plan_shards(datasets: Sequence, num_shards: int) -> list:
    """ShardTasks covering every row of the train and test pairs of validated datasets.

    datasets: [(span number, pipeline.formats.idx.DatasetFacts or MnistDataset), ...], oldest
    first. Shard i of a source holds the i-th contiguous num_shards-th of that source's rows of
    all spans taken one span after the other, so every split has exactly `num_shards` shard
    files, a source's shards differ by at most one row, and each shard reads only the spans its
    rows lie in (a worker decodes each span's file about once however many spans there are;
    a slice of every span per shard made every shard decode every span).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    tasks = []
    for source in ("train", "test"):
        pairs = [(span, dataset.train if source == "train" else dataset.test) for span, dataset in datasets]
        total = sum(pair.count for _, pair in pairs)
        for shard in range(num_shards):
            low, high = total * shard // num_shards, total * (shard + 1) // num_shards
            ranges, offset = [], 0
            for span, pair in pairs:
                start, end = max(low - offset, 0), min(high - offset, pair.count)
                if start < end:
                    ranges.append(
                        RowRange(
                            span=span,
                            images_path=pair.images.path,
                            labels_path=pair.labels.path,
                            images_sha256=pair.images.sha256,
                            labels_sha256=pair.labels.sha256,
                            start=start,
                            end=end,
                            total=pair.count,
                        )
                    )
                offset += pair.count
            tasks.append(ShardTask(source=source, shard=shard, num_shards=num_shards, ranges=tuple(ranges)))
    return tasks


class _WriteShardFn(beam.DoFn):
    """ShardTask -> its shard files, written directly (no shuffle of the records).

    Each worker re-reads the task's files, refusing them (InputDataError) when their sha256
    differs from the validated one (the files changed after validation), encodes its rows
    `chunk_rows` at a time in one vectorised batch, and writes each split's shard under a
    hidden temporary name that is renamed once complete: a retried or killed task leaves no
    partial shard under a final name. Emits (split, examples written) per shard.
    """

    def __init__(
        self,
        output_dir: str,
        eval_hash_buckets: int,
        ink_density_edges: Sequence[float],
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ):
        self._output_dir = output_dir
        self._eval_hash_buckets = int(eval_hash_buckets)
        self._edges = tuple(float(e) for e in ink_density_edges)
        self._chunk_rows = int(chunk_rows)

    def setup(self):
        self._encoder = RecordBatchToExamplesEncoder()
        self._cache = collections.OrderedDict()  # (path, sha256) -> array, least recent first
        self._counters = {
            s: beam.metrics.Metrics.counter(METRICS_NAMESPACE, split_counter_name(s)) for s in SPLITS
        }
        self._shards = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "shards_written")

    def _load(self, path: str, sha256: str, kind: str) -> np.ndarray:
        key = (path, sha256)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        raw = idx.read_file_bytes(path)
        actual = hashlib.sha256(raw).hexdigest()
        if actual != sha256:
            raise InputDataError(
                f"{path}: file changed after validation (sha256 {actual}, validated {sha256})"
            )
        array = idx.parse_idx(raw, path, kind)
        self._cache[key] = array
        while sum(a.nbytes for a in self._cache.values()) > _CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return array

    def _chunks(self, task):
        """(images, labels) of the task's rows, at most chunk_rows at a time."""
        for rows in task.ranges:
            images = self._load(rows.images_path, rows.images_sha256, "images")
            labels = self._load(rows.labels_path, rows.labels_sha256, "labels")
            for start in range(rows.start, rows.end, self._chunk_rows):
                end = min(start + self._chunk_rows, rows.end)
                yield images[start:end], labels[start:end]

    def process(self, task):
        # `task` is a ShardTask; left unannotated so Beam infers no coder or type check from it.
        splits = ("train", "eval") if task.source == "train" else ("test",)
        final = {s: shard_path(self._output_dir, s, task.shard, task.num_shards) for s in splits}
        temporary = {
            s: os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.{uuid.uuid4().hex}.tmp")
            for s, p in final.items()
        }
        counts = dict.fromkeys(splits, 0)
        writers = {}
        try:
            for s in splits:
                os.makedirs(os.path.dirname(final[s]), exist_ok=True)
                writers[s] = tf.io.TFRecordWriter(
                    temporary[s],
                    tf.io.TFRecordOptions(compression_type="GZIP", compression_level=_GZIP_LEVEL),
                )
            for images, labels in self._chunks(task):
                assigned = split_of(task.source, images, labels, self._eval_hash_buckets)
                records = encode_examples(images, labels, self._edges, self._encoder)
                for record, split in zip(records, assigned):
                    writers[split].write(record)
                for split in splits:
                    counts[split] += int(np.count_nonzero(assigned == split))
            for writer in writers.values():
                writer.close()
            for s in splits:
                os.replace(temporary[s], final[s])
        finally:
            for s in splits:
                if os.path.exists(temporary[s]):
                    os.unlink(temporary[s])
        for split, n in counts.items():
            self._counters[split].inc(n)
            yield split, n
        self._shards.inc(len(splits))
        log.info(
            "%s shard %d/%d written: %s",
            task.source,
            task.shard + 1,
            task.num_shards,
            ", ".join(f"{n} {s}" for s, n in counts.items()),
        )


def build_pipeline(
    pipeline: beam.Pipeline,
    tasks: Iterable[ShardTask],
    output_dir: str,
    eval_hash_buckets: int,
    ink_density_edges: Sequence[float],
):
    """Adds the writing of every shard of every split to `pipeline`; returns the PCollection
    of (split, examples written) per shard."""
    return (
        pipeline
        | "CreateShardTasks" >> beam.Create(list(tasks))
        # Spreads the tasks over the workers of runners that run bundles in parallel.
        | "SpreadTasks" >> beam.Reshuffle()
        | "WriteShards" >> beam.ParDo(_WriteShardFn(output_dir, eval_hash_buckets, ink_density_edges))
    )
