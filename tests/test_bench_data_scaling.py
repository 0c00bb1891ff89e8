"""The scaling benchmark's own logic (no pipeline run): the exponent fit, the sizes, and the
transformed digits of its data roots (deterministic, real digits moved, never byte copies)."""

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mnist_slices import TRAIN_IMAGES, read_real, write_mnist_slice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_data_scaling  # noqa: E402
import scaled_mnist  # noqa: E402

from pipeline.formats import idx  # noqa: E402


def test_the_fit_recovers_the_exponent_of_a_power_law():
    sizes = [70_000, 280_000, 1_120_000]
    for b in (0.6, 1.0, 1.3):
        walls = [0.002 * s**b for s in sizes]
        assert bench_data_scaling.fit_exponent(sizes, walls) == pytest.approx(b, abs=1e-9)


def test_the_fit_is_the_least_squares_slope_when_the_points_are_off_a_line():
    # log2 sizes 0, 2, 4; log2 walls 0, 1, 4: slope (0*-2 + 1*0 + 4*2) / 8 = 1, on log2 and on ln alike.
    assert bench_data_scaling.fit_exponent([1, 4, 16], [1, 2, 16]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "sizes, walls",
    [([1], [1.0]), ([1, 4], [1.0, 0.0]), ([0, 4], [1.0, 2.0]), ([4, 4], [1.0, 2.0])],
)
def test_the_fit_refuses_points_it_cannot_fit(sizes, walls):
    with pytest.raises(ValueError):
        bench_data_scaling.fit_exponent(sizes, walls)


def test_scaling_reports_goals_per_step():
    def row(examples, seconds, peak):
        return {"examples": examples, "seconds": seconds, "peak_memory_mib": peak}

    figures = {
        "linear": {"1x": row(100, 2.0, 1000.0), "16x": row(1600, 32.0, 1200.0)},
        "quadratic": {"1x": row(100, 1.0, 1000.0), "16x": row(1600, 256.0, 1300.0)},
    }
    fitted = bench_data_scaling.scaling(figures)
    assert fitted["linear"] == {
        "exponent": 1.0,
        "memory_ratio": 1.2,
        "marginal_examples_per_second": [50.0],
        "exponent_met": True,
        "memory_met": True,
    }
    assert fitted["quadratic"]["exponent"] == 2.0 and fitted["quadratic"]["memory_ratio"] == 1.3
    assert not fitted["quadratic"]["exponent_met"] and not fitted["quadratic"]["memory_met"]


def test_marginal_rates_cancel_a_fixed_start_up():
    rows = [{"examples": n, "seconds": 5.0 + n / 1000} for n in (1000, 4000, 16000)]
    assert bench_data_scaling.marginal_rates(rows) == [1000.0, 1000.0]
    rows.append({"examples": 20000, "seconds": rows[-1]["seconds"]})
    assert bench_data_scaling.marginal_rates(rows)[-1] is None


def test_sizes_are_fractions_or_whole_numbers():
    assert [scaled_mnist.parse_size(s) for s in ("0.1", "1", "16")] == [0.1, 1.0, 16.0]
    assert [scaled_mnist.size_label(s) for s in (0.25, 1.0, 16.0)] == ["0.25x", "1x", "16x"]
    for bad in ("0", "-1", "1.5", "nan"):
        with pytest.raises(ValueError):
            scaled_mnist.parse_size(bad)


def test_a_zero_transformation_is_the_identity_and_a_whole_pixel_shift_moves_the_digit():
    digits = read_real(TRAIN_IMAGES, 20)
    zero, one = np.zeros(20), np.ones(20)
    same = scaled_mnist.transform_digits(digits, zero, np.zeros((20, 2)), one)
    np.testing.assert_array_equal(same, digits)
    down_right = scaled_mnist.transform_digits(digits, zero, np.tile([1.0, 2.0], (20, 1)), one)
    expected = np.zeros_like(digits)
    expected[:, 1:, 2:] = digits[:, :-1, :-2]
    np.testing.assert_array_equal(down_right, expected)


def test_transformed_spans_are_deterministic_change_every_digit_and_differ_per_span():
    digits = read_real(TRAIN_IMAGES, 500)
    span1 = scaled_mnist.transformed_span(digits, 1)
    np.testing.assert_array_equal(span1, scaled_mnist.transformed_span(digits.copy(), 1))
    span2 = scaled_mnist.transformed_span(digits, 2)
    for moved in (span1, span2):
        assert not (moved == digits).all(axis=(1, 2)).any()
        # Still the same digit: the ink moves a little, it does not vanish or double.
        ink, moved_ink = digits.sum(axis=(1, 2)), moved.sum(axis=(1, 2)).astype(float)
        assert np.all(np.abs(moved_ink / ink - 1) < 0.35)
    assert not (span1 == span2).all(axis=(1, 2)).any()
    params = scaled_mnist.affine_parameters(3, 1000)
    degrees = np.abs(np.rad2deg(params["angle"]))
    assert degrees.min() >= 3 and degrees.max() <= 10
    assert np.abs(params["shift"]).max() <= 1.5
    with pytest.raises(ValueError, match="span 0"):
        scaled_mnist.affine_parameters(0, 10)


def test_data_roots_are_valid_mnist_spans_built_once(tmp_path):
    source = write_mnist_slice(str(tmp_path / "source"), 40, 10)
    work = str(tmp_path / "work")
    root, spans = scaled_mnist.data_root(work, 2, source)
    assert spans == 2 and sorted(os.listdir(root)) == ["span-0", "span-1"]
    original, moved = (idx.load_dataset(os.path.join(root, f"span-{k}")) for k in (0, 1))
    assert original.file_digests() == idx.load_dataset(source).file_digests()
    np.testing.assert_array_equal(moved.train.labels.array, original.train.labels.array)
    assert not (moved.train.images.array == original.train.images.array).all(axis=(1, 2)).any()
    written = os.path.getmtime(os.path.join(root, "span-1", idx.TRAIN_IMAGES))
    larger, spans = scaled_mnist.data_root(work, 3, source)
    assert spans == 3 and os.path.getmtime(os.path.join(larger, "span-1", idx.TRAIN_IMAGES)) == written
    assert os.path.realpath(os.path.join(larger, "span-1")) == os.path.realpath(os.path.join(root, "span-1"))

    part, spans = scaled_mnist.data_root(work, 0.25, source)
    sliced = idx.load_dataset(os.path.join(part, "span-0"))
    assert spans == 1 and (sliced.train.count, sliced.test.count) == (10, math.ceil(10 * 0.25))
    np.testing.assert_array_equal(sliced.train.images.array, original.train.images.array[:10])
