"""ExampleValidator: schema anomalies and drift stop the run; clean data passes."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from step_context import step_context
from tiny_examples import (
    SplitData,
    compute_statistics,
    curated_schema_artifact,
    real_split,
    reference_artifact,
    write_examples_artifact,
)

from components.example_validator.drift import (
    DriftMeasurement,
    exceeds,
    js_divergence,
    linf_distance,
    normalize,
)
from components.example_validator.executor import run
from components.schema_gen.executor import run as schema_gen_run
from pipeline.config import ValidationConfig
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.core.step import Artifact

SHIPPED = "the shipped MNIST reference"

# ---------------------------------------------------------------- drift math (pure)


def test_identical_distributions_have_zero_distance():
    counts = [5, 0, 3, 2]
    assert linf_distance(counts, counts) == 0.0
    assert js_divergence(counts, counts) == 0.0
    # Normalised first: the same distribution from a span three times larger.
    assert linf_distance(counts, [15, 0, 9, 6]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(counts, [15, 0, 9, 6]) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_distributions_have_maximal_distance():
    assert linf_distance([4, 0, 0], [0, 0, 7]) == 1.0
    assert js_divergence([4, 6, 0, 0], [0, 0, 7, 1]) == pytest.approx(1.0)


def test_known_values():
    assert linf_distance([1, 0], [1, 1]) == pytest.approx(0.5)
    # p = (1, 0), q = (.5, .5), m = (.75, .25): JSD = (log2(4/3) + .5*log2(2/3) + .5) / 2
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert js_divergence([1, 0], [1, 1]) == pytest.approx(expected)


def test_threshold_boundary():
    assert not exceeds(0.05, 0.05)
    assert exceeds(0.05 + 1e-9, 0.05)
    assert exceeds(float("nan"), 0.05)
    assert not DriftMeasurement("label", "l_infinity", 0.05, 0.05).exceeded
    assert DriftMeasurement("label", "l_infinity", 0.0501, 0.05).to_json()["exceeded"] is True


@pytest.mark.parametrize(
    "p, q, message",
    [
        ([0, 0], [1, 1], "empty"),
        ([1, 2], [1, 2, 3], "different numbers of bins"),
        ([1, -1], [1, 1], "non-negative"),
        ([[1, 2]], [[1, 2]], "1-D"),
    ],
)
def test_invalid_histograms_raise(p, q, message):
    with pytest.raises(ValueError, match=message):
        js_divergence(p, q)
    with pytest.raises(ValueError, match=message):
        linf_distance(p, q)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=30).filter(
        lambda pairs: sum(a for a, _ in pairs) > 0 and sum(b for _, b in pairs) > 0
    )
)
def test_distances_are_bounded_and_symmetric(pairs):
    p, q = np.array(pairs).T
    for distance in (linf_distance, js_divergence):
        value = distance(p, q)
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(distance(q, p), abs=1e-12)
    assert normalize(p).sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- executor


def _inverted(data: SplitData) -> SplitData:
    return SplitData(images=[255 - image for image in data.images], labels=data.labels.copy())


def _corrupt(data: SplitData, image=None, label=None, drop=None) -> SplitData:
    images = [im.copy() for im in data.images]
    labels = data.labels.copy()
    if image:
        image(images)
    if label:
        label(labels)
    return SplitData(images=images, labels=labels, drop=drop or {})


def _set_pixel(images):
    images[7][100] = 300


def _shorten(images):
    images[3] = images[3][:783]


def _label_11(labels):
    labels[5] = 11


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Statistics of every test case in one Beam run; tests assemble artifacts from its splits.

    Each split costs Beam a fixed ~2 s, so the injected anomalies share two corrupted splits;
    every anomaly is still checked on its own (its feature, type and severity).
    """
    root = tmp_path_factory.mktemp("validator_corpus")
    clean = real_split(300)
    bad = real_split(100, 300)
    splits = {
        "clean": clean,
        "previous": real_split(300, 1000),  # other real digits: natural span-to-span variation
        "digits_0_4": real_split(300, 2000, digits=(0, 1, 2, 3, 4)),
        "inverted": _inverted(clean),
        # label 11 in example 5, pixel value 300 in example 7
        "bad_values": _corrupt(bad, label=_label_11, image=_set_pixel),
        # a 783-pixel image, ink_density absent from 2 examples, ink_density_bucket from all
        "bad_shape": _corrupt(
            bad, image=_shorten, drop={"ink_density": [2, 9], "ink_density_bucket": list(range(100))}
        ),
        "few": real_split(20, 400),
        "empty": SplitData(images=[], labels=np.zeros(0, dtype=np.int64)),
    }
    examples = write_examples_artifact(str(root / "examples"), splits)
    compute_statistics(examples, str(root / "statistics"))
    schema_ctx = step_context(
        "schema_gen",
        {"curated_schema": curated_schema_artifact()},
        {"schema": str(root / "schema")},
        params=ValidationConfig(infer_schema_report=False),
    )
    schema_gen_run(schema_ctx)
    # The validator also reads the span's examples for train/test leakage: real digits, no
    # test digit among the training ones (tests/test_leakage.py salts them).
    leak_free = write_examples_artifact(
        str(root / "leak_free_examples"), {"train": real_split(200, 5000), "test": real_split(50, 6000)}
    )
    return {
        "stats": str(root / "statistics"),
        "schema": Artifact(str(root / "schema"), "Schema"),
        "examples": Artifact(leak_free, "Examples"),
    }


def _stats_artifact(corpus, dest, **splits) -> Artifact:
    """A statistics artifact whose split `name` holds the corpus statistics of case `case`."""
    for name, case in splits.items():
        shutil.copytree(os.path.join(corpus["stats"], f"Split-{case}"), os.path.join(dest, f"Split-{name}"))
    return Artifact(str(dest), "ExampleStatistics", {"spans": [1]})


def _validate(tmp_path, corpus, current: dict, previous: dict = None, reference: bool = True, **params):
    """Runs the validator on corpus splits. As the pipeline wires it, a first span (no
    `previous`) gets the shipped reference, unless `reference` is False."""
    inputs = {
        "statistics": _stats_artifact(corpus, tmp_path / "current", **current),
        "examples": corpus["examples"],
        "schema": corpus["schema"],
    }
    if previous is not None:
        inputs["previous_statistics"] = _stats_artifact(corpus, tmp_path / "previous", **previous)
    elif reference:
        inputs["reference_statistics"] = reference_artifact()
    out = tmp_path / "anomalies"
    ctx = step_context(
        "example_validator", inputs, {"anomalies": str(out)}, params=ValidationConfig(**params)
    )
    return run(ctx), out


def _load_anomalies(out, split):
    from tensorflow_data_validation.utils.anomalies_util import load_anomalies_binary

    return load_anomalies_binary(str(out / f"Split-{split}" / "SchemaDiff.pb"))


def _reasons(anomalies, feature):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    info = anomalies.dataset_anomaly_info if feature == "(dataset)" else anomalies.anomaly_info[feature]
    return {anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason}


def test_clean_data_passes(tmp_path, corpus):
    """A first span of real digits passes, its drift measured against the shipped reference."""
    outcome, out = _validate(tmp_path, corpus, {"train": "clean", "eval": "previous"})
    assert outcome.stop_run is None
    props = outcome.execution_properties
    assert props["passed"] is True
    assert props["anomaly_counts"] == {"train": 0, "eval": 0}
    assert props["split_counts"] == {"train": 300, "eval": 300}
    assert props["drift_checked"] is True
    assert props["drift_baseline"] == SHIPPED and props["drift_baseline_kind"] == "reference"
    defaults = ValidationConfig()
    assert props["drift_thresholds"] == {
        "label_l_infinity": defaults.reference_label_drift_linf,
        "image_jensen_shannon_divergence": defaults.reference_pixel_drift_jsd,
    }
    assert 0 < props["drift"]["label_l_infinity"] <= defaults.reference_label_drift_linf
    assert 0 < props["drift"]["image_jensen_shannon_divergence"] <= defaults.reference_pixel_drift_jsd
    for split in ("train", "eval"):
        anomalies = _load_anomalies(out, split)
        assert not anomalies.anomaly_info and not anomalies.HasField("dataset_anomaly_info")
        assert not anomalies.data_missing
    assert sorted(list(d.path.step) for d in _load_anomalies(out, "train").drift_skew_info) == [
        ["image"],
        ["label"],
    ]
    drift = json.loads((out / "drift.json").read_text())
    assert drift["checked"] is True and drift["baseline"] == SHIPPED and drift["baseline_kind"] == "reference"
    report = (out / "report.txt").read_text()
    assert "result:      PASSED" in report
    assert (
        f"drift (train split against {SHIPPED}): reference statistics {reference_artifact().uri} (sha256 "
        in report
    )
    assert "as the first span has no previous span" in report
    assert "reference_check = false" not in report  # the hint is only for a span that drifted


def test_first_span_with_the_reference_check_off_is_not_checked(tmp_path, corpus):
    outcome, out = _validate(
        tmp_path, corpus, {"train": "clean", "eval": "previous"}, reference=False, reference_check=False
    )
    assert outcome.stop_run is None
    props = outcome.execution_properties
    assert props["passed"] is True
    assert props["drift_checked"] is False and props["drift_baseline"] is None and props["drift"] == {}
    assert not _load_anomalies(out, "train").drift_skew_info
    assert json.loads((out / "drift.json").read_text())["checked"] is False
    report = (out / "report.txt").read_text()
    assert "result:      PASSED" in report
    assert (
        "drift (train split): not checked: first span (no previous span) and "
        "validation.reference_check = false" in report
    )


def test_reference_check_on_without_any_baseline_fails_closed(tmp_path, corpus):
    """The factory always wires a baseline while the check is on; its absence is an error, never
    a silent skip."""
    with pytest.raises(PipelineError, match="reference_check is on, but the step got neither"):
        _validate(tmp_path, corpus, {"train": "clean"}, reference=False)


def test_non_digits_drift_from_the_reference_and_the_message_names_it(tmp_path, corpus):
    outcome, out = _validate(tmp_path, corpus, {"train": "inverted"})
    assert outcome.stop_exit_code == 3
    assert outcome.stop_run.startswith(
        f"data validation failed: train/image: High Jensen-Shannon divergence to {SHIPPED}: "
    )
    assert outcome.stop_run.endswith(
        f" > {ValidationConfig().reference_pixel_drift_jsd:g} (COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH)"
    )
    drift = outcome.execution_properties["drift"]
    assert drift["image_jensen_shannon_divergence"] > 0.5
    assert drift["label_l_infinity"] <= ValidationConfig().reference_label_drift_linf  # real labels
    anomalies = _load_anomalies(out, "train")
    assert set(anomalies.anomaly_info) == {"image"}
    assert f"and that of {SHIPPED} is " in anomalies.anomaly_info["image"].description
    report = (out / "report.txt").read_text()
    assert (
        f"drift (train split against {SHIPPED}): " in report and "image  jensen_shannon_divergence" in report
    )
    assert "set validation.reference_check = false or point validation.reference_path" in report


def test_reference_limits_are_their_own(tmp_path, corpus):
    """Against the reference, the reference_* limits apply, not those between spans."""
    measured, _ = _validate(tmp_path / "measured", corpus, {"train": "clean"})
    label = measured.execution_properties["drift"]["label_l_infinity"]
    loose_spans, _ = _validate(
        tmp_path / "spans",
        corpus,
        {"train": "clean"},
        label_drift_linf=1.0,
        reference_label_drift_linf=label * 0.999,
    )
    assert loose_spans.stop_run.startswith(
        f"data validation failed: train/label: High L-infinity distance to {SHIPPED}: "
    )
    tight_spans, _ = _validate(tmp_path / "tight", corpus, {"train": "clean"}, label_drift_linf=label * 0.5)
    assert tight_spans.stop_run is None


def test_a_reference_changed_after_the_run_resolved_it_is_refused(tmp_path, corpus):
    copy = tmp_path / "reference.json"
    copy.write_bytes(open(reference_artifact().uri, "rb").read())
    artifact = reference_artifact(copy)
    copy.write_bytes(copy.read_bytes().replace(b'"name": "the shipped', b'"name": "an edited'))
    ctx = step_context(
        "example_validator",
        {
            "statistics": _stats_artifact(corpus, tmp_path / "cur", train="clean"),
            "examples": corpus["examples"],
            "schema": corpus["schema"],
            "reference_statistics": artifact,
        },
        {"anomalies": str(tmp_path / "out")},
        params=ValidationConfig(),
    )
    with pytest.raises(InputDataError, match="reference.json: file changed while the run was using it"):
        run(ctx)


INJECTED = {
    # anomaly: (corpus split, feature named in the report, TFDV anomaly type)
    "label_out_of_range": ("bad_values", "label", "INT_TYPE_BIG_INT"),
    "pixel_out_of_range": ("bad_values", "image", "INT_TYPE_BIG_INT"),
    "wrong_image_length": ("bad_shape", "image", "FEATURE_TYPE_LOW_NUMBER_VALUES"),
    "feature_missing_in_some": ("bad_shape", "ink_density", "FEATURE_TYPE_LOW_FRACTION_PRESENT"),
    "feature_missing_in_all": ("bad_shape", "ink_density_bucket", "SCHEMA_MISSING_COLUMN"),
    "too_few_examples": ("few", "(dataset)", "DATASET_LOW_NUM_EXAMPLES"),
    "no_examples": ("empty", "(dataset)", "DATASET_LOW_NUM_EXAMPLES"),
}


@pytest.mark.parametrize("anomaly_case", sorted(INJECTED))
def test_injected_anomaly_stops_the_run(tmp_path, corpus, anomaly_case):
    case, feature, anomaly = INJECTED[anomaly_case]
    outcome, out = _validate(tmp_path, corpus, {"train": "clean", "eval": case})
    assert outcome.stop_exit_code == 3
    assert outcome.stop_run.startswith("data validation failed: eval/")
    assert outcome.execution_properties["passed"] is False
    assert outcome.execution_properties["error_counts"]["eval"] >= 1
    assert outcome.execution_properties["error_counts"]["train"] == 0
    assert anomaly in _reasons(_load_anomalies(out, "eval"), feature)
    assert not _load_anomalies(out, "train").anomaly_info
    report = (out / "report.txt").read_text()
    assert f"ERROR   split=eval feature={feature} anomaly=" in report
    assert anomaly in [line for line in report.splitlines() if f"split=eval feature={feature} " in line][0]
    assert "result:      FAILED" in report


def test_stop_message_names_split_feature_and_anomaly(tmp_path, corpus):
    outcome, _ = _validate(tmp_path, corpus, {"train": "bad_values", "eval": "clean"})
    assert outcome.stop_run == (
        "data validation failed: train/image: Out-of-range values (INT_TYPE_BIG_INT); "
        "1 more ERROR anomaly in report.txt"
    )


def test_label_drift_beyond_threshold_stops(tmp_path, corpus):
    outcome, out = _validate(tmp_path, corpus, {"train": "digits_0_4"}, previous={"train": "clean"})
    assert outcome.stop_run.startswith("data validation failed: train/label: ")
    assert "COMPARATOR_L_INFTY_HIGH" in outcome.stop_run
    assert "High L-infinity distance to previous span 1: " in outcome.stop_run  # names the baseline
    assert outcome.execution_properties["drift_baseline"] == "previous span 1"
    assert (
        outcome.execution_properties["drift_thresholds"]["label_l_infinity"]
        == ValidationConfig().label_drift_linf
    )
    label_linf = outcome.execution_properties["drift"]["label_l_infinity"]
    assert label_linf > 0.05
    anomalies = _load_anomalies(out, "train")
    assert _reasons(anomalies, "label") == {"COMPARATOR_L_INFTY_HIGH"}
    assert "l infinity" in anomalies.anomaly_info["label"].description
    drift = {m["feature"]: m for m in json.loads((out / "drift.json").read_text())["measurements"]}
    assert drift["label"]["exceeded"] is True and drift["image"]["exceeded"] is False
    assert "label  l_infinity = " in (out / "report.txt").read_text()
    assert "drift (train split against previous span 1): statistics " in (out / "report.txt").read_text()


def test_pixel_drift_beyond_threshold_stops(tmp_path, corpus):
    outcome, out = _validate(tmp_path, corpus, {"train": "inverted"}, previous={"train": "clean"})
    assert outcome.stop_run.startswith("data validation failed: train/image: ")
    assert "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in outcome.stop_run
    drift = outcome.execution_properties["drift"]
    assert drift["image_jensen_shannon_divergence"] > 0.5
    assert drift["label_l_infinity"] == 0.0  # same labels: only the pixels moved
    anomalies = _load_anomalies(out, "train")
    assert set(anomalies.anomaly_info) == {"image"}
    [entry] = [d for d in anomalies.drift_skew_info if list(d.path.step) == ["image"]]
    assert entry.drift_measurements[0].value > entry.drift_measurements[0].threshold


def test_drift_within_threshold_passes_and_boundary(tmp_path, corpus):
    outcome, out = _validate(tmp_path / "default", corpus, {"train": "clean"}, previous={"train": "previous"})
    assert outcome.stop_run is None
    drift = outcome.execution_properties["drift"]
    assert 0 < drift["label_l_infinity"] <= 0.05
    assert 0 < drift["image_jensen_shannon_divergence"] <= 0.05
    anomalies = _load_anomalies(out, "train")
    assert not anomalies.anomaly_info
    assert sorted(list(d.path.step) for d in anomalies.drift_skew_info) == [["image"], ["label"]]
    # The measured distance equal to the threshold passes; a threshold just below it fails.
    measured = json.loads((out / "drift.json").read_text())["measurements"]
    label_value = [m["value"] for m in measured if m["feature"] == "label"][0]
    at, _ = _validate(
        tmp_path / "at",
        corpus,
        {"train": "clean"},
        previous={"train": "previous"},
        label_drift_linf=label_value,
    )
    assert at.stop_run is None
    below, _ = _validate(
        tmp_path / "below",
        corpus,
        {"train": "clean"},
        previous={"train": "previous"},
        label_drift_linf=label_value * 0.999,
    )
    assert below.stop_run.startswith("data validation failed: train/label: ")


def test_previous_statistics_without_train_split_fail_closed(tmp_path, corpus):
    outcome, out = _validate(tmp_path, corpus, {"train": "clean"}, previous={"eval": "previous"})
    assert "COMPARATOR_CONTROL_DATA_MISSING" in outcome.stop_run
    anomalies = _load_anomalies(out, "train")
    assert _reasons(anomalies, "label") == {"COMPARATOR_CONTROL_DATA_MISSING"}
    assert _reasons(anomalies, "image") == {"COMPARATOR_CONTROL_DATA_MISSING"}


def test_previous_statistics_without_histograms_fail_closed(tmp_path, corpus):
    """Statistics written without the exact histograms (plain TFDV) cannot pass the drift check."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    previous = _stats_artifact(corpus, tmp_path / "prev", train="previous")
    path = os.path.join(previous.uri, "Split-train", "FeatureStats.pb")
    with open(path, "rb") as f:
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    for feature in stats.datasets[0].features:
        del feature.custom_stats[:]
    with open(path, "wb") as f:
        f.write(stats.SerializeToString())
    ctx = step_context(
        "example_validator",
        {
            "statistics": _stats_artifact(corpus, tmp_path / "cur", train="clean"),
            "examples": corpus["examples"],
            "schema": corpus["schema"],
            "previous_statistics": previous,
        },
        {"anomalies": str(tmp_path / "out")},
        params=ValidationConfig(),
    )
    outcome = run(ctx)
    assert outcome.stop_run.startswith("data validation failed: train/image: No previous-span data")
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "label  not compared: The previous span's statistics hold no value histogram of label" in report


def test_missing_schema_or_broken_statistics_are_input_errors(tmp_path, corpus):
    stats = _stats_artifact(corpus, tmp_path / "cur", train="clean")
    ctx = step_context(
        "example_validator",
        {"statistics": stats, "schema": Artifact(str(tmp_path), "Schema")},
        {"anomalies": str(tmp_path / "out1")},
        params=ValidationConfig(),
    )
    with pytest.raises(InputDataError, match=f"schema file {tmp_path}/schema.pbtxt: cannot be read"):
        run(ctx)
    (tmp_path / "cur" / "Split-train" / "FeatureStats.pb").write_bytes(b"\xff\xff not a proto")
    ctx = step_context(
        "example_validator",
        {"statistics": stats, "schema": corpus["schema"]},
        {"anomalies": str(tmp_path / "out2")},
        params=ValidationConfig(),
    )
    with pytest.raises(InputDataError, match="FeatureStats.pb: not a binary DatasetFeatureStatisticsList"):
        run(ctx)
