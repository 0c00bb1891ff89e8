"""Train/test leakage in the data gate: training and eval digits equal to a test digit.

The pure functions on tiny arrays (threshold edges included), then the data half end to end on
real digits: salted with exact test digits, salted with slightly altered ones, and clean.
"""

import glob
import json
import os

import numpy as np
import pytest
from mnist_slices import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_real, write_idx

from components.example_validator import leakage
from components.example_validator.leakage import (
    NEAR_MAX_PIXELS,
    PIXEL_TOLERANCE,
    LeakageResult,
    exceeded,
    find_leakage,
)
from pipeline.cli import main
from pipeline.core.metadata import open_store

# ---------------------------------------------------------------- pure functions


def _random_digits(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 784), dtype=np.uint8)


def _in_one_block(count: int) -> np.ndarray:
    """`count` (<= 16) pixel indexes inside the top-left 4 x 4 block (one block of the hash)."""
    return np.array([row * 28 + col for row in range(4) for col in range(4)][:count])


def test_exact_copies_are_found_by_split_and_index():
    test = _random_digits(20, 1)
    train, evals = _random_digits(50, 2), _random_digits(10, 3)
    train[[7, 31]] = test[[4, 0]]
    evals[9] = test[19]
    result = find_leakage({"train": train, "eval": evals}, test)
    assert result.exact == {"train": [7, 31], "eval": [9]}
    assert result.near == {"train": [], "eval": []}
    assert result.first(result.exact) == ["train[7]", "train[31]", "eval[9]"]
    assert result.checked == {"train": 50, "eval": 10} and result.test_digits == 20


@pytest.mark.parametrize(
    "changed, delta, near",
    [
        (NEAR_MAX_PIXELS, 255, True),  # the most pixels a near duplicate may change
        (NEAR_MAX_PIXELS + 1, 255, False),
        (16, PIXEL_TOLERANCE, True),  # within the tolerance: those pixels count as equal
        (NEAR_MAX_PIXELS + 1, PIXEL_TOLERANCE + 1, False),
    ],
)
def test_near_duplicate_threshold_edges(changed, delta, near):
    test = _random_digits(5, 4)
    test[:, _in_one_block(16)] = 0
    altered = test[2].copy()
    altered[_in_one_block(changed)] = delta
    train = np.concatenate([_random_digits(30, 5), altered[None]])
    result = find_leakage({"train": train}, test)
    assert result.exact == {"train": []}
    assert result.near == {"train": [30] if near else []}


def test_a_digit_is_exact_or_near_never_both():
    test = _random_digits(3, 6)
    result = find_leakage({"train": test.copy()}, test)
    assert result.exact == {"train": [0, 1, 2]} and result.near == {"train": []}


def test_candidates_match_brute_force():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 4, size=(200, 2), dtype=np.uint8)
    test_keys = rng.integers(0, 4, size=(60, 2), dtype=np.uint8)

    def as_void(a):
        return np.ascontiguousarray(a).view(np.dtype((np.void, 2))).ravel()

    rows, test_rows = leakage.candidate_pairs(as_void(keys), as_void(test_keys))
    found = sorted(zip(rows.tolist(), test_rows.tolist()))
    expected = [(i, j) for i in range(200) for j in range(60) if (keys[i] == test_keys[j]).all()]
    assert found == expected and expected


def test_block_signatures_count_the_inked_pixels_of_each_block():
    images = _random_digits(40, 8)
    inked = (images > leakage.INK_LEVEL).reshape(-1, 7, 4, 7, 4).sum(axis=(2, 4)).reshape(-1, 49)
    expected = inked // leakage.COUNT_STEP
    blocks = np.arange(49)
    for table, keys in enumerate(leakage.block_signatures(images)):
        subset = expected[:, blocks % leakage.TABLES != table].astype(np.uint8)
        assert [bytes(k) for k in keys] == [row.tobytes() for row in subset]


def test_limits_are_exceeded_only_strictly_above():
    result = LeakageResult(checked={"train": 900, "eval": 100}, test_digits=10)
    result.exact.update({"train": [3, 5], "eval": [1]})
    result.near.update({"train": [8], "eval": [2, 4]})
    assert exceeded(result, max_exact=3, max_near_rate=0.003) is None  # 3 exact, rate 0.3%
    line = exceeded(result, max_exact=2, max_near_rate=0.003)
    assert line.startswith("train/test leakage: digits of the test split in train+eval: 3 exact (limit 2)")
    assert "first train[3], train[5], eval[1]" in line and "\n" not in line
    line = exceeded(result, max_exact=3, max_near_rate=0.0029)
    assert "3 near, 0.3000% of 1000 (limit 0.2900%), first train[8], eval[2], eval[4]" in line


def test_first_names_at_most_a_few():
    result = LeakageResult(checked={"train": 100}, test_digits=10, exact={"train": list(range(9))})
    assert result.first(result.exact) == [f"train[{i}]" for i in range(leakage.FIRST_FEW)]


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match=r"uint8 \[N, 784\]"):
        find_leakage({"train": np.zeros((2, 783), np.uint8)}, np.zeros((1, 784), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[N, 784\]"):
        find_leakage({"train": np.zeros((2, 784), np.int64)}, np.zeros((1, 784), np.uint8))


# ---------------------------------------------------------------- the gate end to end

N_TRAIN, N_TEST, SALTED = 1500, 300, 12


def _write_span(dest, train_images) -> str:
    """The four MNIST files: `train_images` with the real training labels, the real test slice."""
    os.makedirs(dest)
    write_idx(os.path.join(dest, TRAIN_IMAGES), train_images)
    write_idx(os.path.join(dest, TRAIN_LABELS), read_real(TRAIN_LABELS, N_TRAIN))
    write_idx(os.path.join(dest, TEST_IMAGES), read_real(TEST_IMAGES, N_TEST))
    write_idx(os.path.join(dest, TEST_LABELS), read_real(TEST_LABELS, N_TEST))
    return str(dest)


def _salted(alter=None) -> np.ndarray:
    """Real training digits with test digits 0..SALTED-1 (through `alter`) at rows 100, 200, ..."""
    train = read_real(TRAIN_IMAGES, N_TRAIN).copy()
    test = read_real(TEST_IMAGES, SALTED)
    for k in range(SALTED):
        train[100 * (k + 1)] = alter(test[k], k) if alter else test[k]
    return train


def _gate(tmp_path, data_root):
    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "--data-root",
            data_root,
            "--pipeline-root",
            str(tmp_path / "root"),
            "--to",
            "example_validator",
            "--summary-json",
            str(summary_path),
        ]
    )
    summary = json.loads(summary_path.read_text())
    step = summary["steps"]["example_validator"]
    anomalies = step["outputs"]["anomalies"]
    return code, summary, step["properties"]["leakage"], anomalies


def test_exact_test_digits_in_the_training_files_stop_the_gate(tmp_path):
    code, summary, found, anomalies = _gate(tmp_path, _write_span(tmp_path / "mnist", _salted()))
    assert code == 3
    assert found["exact_duplicates"] == SALTED and found["near_duplicates"] == 0 and found["exceeded"]
    message = summary["message"]
    assert f"{SALTED} exact (limit 0), first " in message and "\n" not in message
    # the record indexes named are those of the split each digit went to, and hold a test digit
    first = found["first_exact"]
    assert len(first) == leakage.FIRST_FEW and first[0] in message
    report = open(os.path.join(anomalies, "report.txt")).read()
    assert "FAILED" in report and f"exact duplicates: {SALTED} (limit 0)" in report
    assert json.load(open(os.path.join(anomalies, "leakage.json")))["exact_duplicates"] == SALTED
    [html] = glob.glob(str(tmp_path / "root" / "runs" / "*" / "report.html"))
    page = open(html, encoding="utf-8").read()
    assert "train/test leakage (" in page and first[0] in page
    # ML Metadata: on the anomalies artifact and in the validator's execution outcome
    store = open_store(str(tmp_path / "root"))
    [execution] = store.executions_of("example_validator")
    [artifact_id] = store.outputs_of(execution.id).values()
    properties = store.artifact(artifact_id).properties
    assert properties["leakage_exact"] == SALTED and properties["leakage_near"] == 0
    assert properties["passed"] == 0
    recorded = store.execution_outcome(execution)
    assert json.dumps(recorded).count(f'"exact_duplicates": {SALTED}') == 1, recorded


def _few_pixels_and_brighter(digit: np.ndarray, k: int) -> np.ndarray:
    """The test digit with 6 pixels repainted and every pixel 10 % darker: no byte-equal copy."""
    rng = np.random.default_rng(100 + k)
    altered = (digit.astype(np.float32) * 0.9).astype(np.uint8)
    pixels = rng.choice(784, size=6, replace=False)
    altered.reshape(-1)[pixels] = rng.integers(0, 256, size=6)
    return altered


def test_slightly_altered_test_digits_stop_the_gate(tmp_path):
    code, summary, found, _ = _gate(
        tmp_path, _write_span(tmp_path / "mnist", _salted(_few_pixels_and_brighter))
    )
    assert code == 3
    assert found["exact_duplicates"] == 0
    # the hash can miss an altered digit (about 3 in 100 with 5 pixels repainted): most are found
    assert SALTED * 0.75 <= found["near_duplicates"] <= SALTED
    assert f"{found['near_duplicates']} near, " in summary["message"]


def test_a_clean_real_slice_passes_with_zero_counts_recorded(tmp_path):
    code, summary, found, anomalies = _gate(
        tmp_path, _write_span(tmp_path / "mnist", read_real(TRAIN_IMAGES, N_TRAIN))
    )
    assert code == 0, summary.get("message")
    assert found["exact_duplicates"] == 0 and found["near_duplicates"] == 0 and not found["exceeded"]
    assert sum(found["checked"].values()) == N_TRAIN and found["test_digits"] == N_TEST
    assert found["max_exact"] == 0 and found["max_near_rate"] == 0.001
    assert "exact duplicates: 0 (limit 0)" in open(os.path.join(anomalies, "report.txt")).read()


def test_read_images_keeps_record_order_and_refuses_bad_pixels(tmp_path):
    from tiny_examples import SplitData, real_split, write_examples_artifact

    from pipeline.core.errors import InputDataError
    from pipeline.formats.examples import read_images

    digits = real_split(30)
    bad = SplitData(images=[im.copy() for im in digits.images], labels=digits.labels.copy())
    bad.images[7][100] = 300
    uri = write_examples_artifact(str(tmp_path / "examples"), {"train": digits, "broken": bad})
    images = read_images(uri, "train")
    assert images.dtype == np.uint8 and np.array_equal(images, np.stack(digits.images))
    with pytest.raises(InputDataError, match=r"Split-broken: a pixel outside 0\.\.255"):
        read_images(uri, "broken")
