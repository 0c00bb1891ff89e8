"""The warm-retrain benchmark's own logic (no pipeline run): how it cuts real digits into span
folders, the config each retrain runs with, and its paired verdict against the cold model."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mnist_slices import write_mnist_slice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_warm_retrain  # noqa: E402

from components.evaluator import paired_stats  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.formats import idx  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return idx.load_dataset(write_mnist_slice(str(tmp_path_factory.mktemp("digits")), 300, 90))


def test_spans_cut_every_training_digit_once_and_deal_the_test_digits_round_robin(dataset, tmp_path):
    sequence = bench_warm_retrain.SpanSequence(seed=5, sizes=(200, 60, 40))
    bench_warm_retrain.write_spans(dataset, sequence, str(tmp_path))
    spans = [idx.load_dataset(str(tmp_path / f"span-{n}")) for n in range(3)]
    assert [s.train.count for s in spans] == [200, 60, 40]
    rows = {bytes(r) for s in spans for r in s.train.images.array.reshape(-1, 784)}
    assert rows == {bytes(r) for r in dataset.train.images.array.reshape(-1, 784)}
    test = dataset.test.images.array
    for n, span in enumerate(spans):
        assert np.array_equal(span.test.images.array, test[n::3])
    # The same seed cuts the same spans: a rerun with the same work dir keeps what it wrote.
    before = (tmp_path / "span-1" / idx.TRAIN_IMAGES).read_bytes()
    os.remove(tmp_path / ".complete")
    bench_warm_retrain.write_spans(dataset, sequence, str(tmp_path))
    assert (tmp_path / "span-1" / idx.TRAIN_IMAGES).read_bytes() == before


def test_spans_that_do_not_cut_all_the_digits_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="must cut all 300 training digits"):
        bench_warm_retrain.write_spans(dataset, bench_warm_retrain.SpanSequence(5, (200, 50)), str(tmp_path))


def test_each_retrain_reads_the_spans_so_far_warm_starts_and_ships_unless_worse(tmp_path):
    config = load_config(bench_warm_retrain.run_config(str(tmp_path), 3, 100))
    assert (config.data.span, config.data.window_spans) == (3, 4)
    assert config.trainer.warm_start and config.trainer.warm_start_steps == 100
    assert config.evaluator.promotion_policy == "non_inferiority"


def test_the_verdict_is_the_gates_newcombe_interval_against_the_margin():
    cold = np.array([True] * 9900 + [False] * 100)
    warm = cold.copy()
    warm[:40] = False  # 40 digits only the cold model gets right
    verdict = bench_warm_retrain.against_cold(warm, cold)
    table = paired_stats.PairedTable(both_correct=9860, candidate_only=0, baseline_only=40, both_wrong=100)
    assert verdict["ci95"] == list(paired_stats.newcombe_difference_interval(table, 0.05))
    assert verdict["difference"] == pytest.approx(-0.004)
    assert (verdict["warm_only"], verdict["cold_only"]) == (0, 40)
    assert verdict["non_inferior"] is False  # the lower bound is below -0.003
    assert bench_warm_retrain.against_cold(cold, cold)["non_inferior"] is True
