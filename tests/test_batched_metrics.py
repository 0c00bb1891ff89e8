"""The evaluator's batched metrics: the TFMA output it writes holds the values TFMA's own
per-example metrics give, and the values computed here independently from the models'
probabilities, under the same keys, slices and confusion matrices."""

import glob

import model_fixtures
import numpy as np
import pytest

from components.evaluator import analysis, model_loading, slice_metrics, tfma_setup
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.formats import evaluation
from pipeline.formats import examples as examples_format
from pipeline.formats.model import SERVING_SUBDIR

N_TEST = 300


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched_metrics_assets")
    model_fixtures.build_model(str(root / "good"), steps=40)
    model_fixtures.build_model(str(root / "weak"), steps=2)
    return {
        "examples": model_fixtures.write_examples(str(root / "examples"), N_TEST),
        "good": str(root / "good" / SERVING_SUBDIR),
        "weak": str(root / "weak" / SERVING_SUBDIR),
    }


def run_evaluator(assets, out, baseline: bool):
    from apache_beam.options.pipeline_options import PipelineOptions

    return analysis.run_analysis(
        examples_format.split_pattern(assets["examples"], "test"),
        assets["good"],
        assets["weak"] if baseline else None,
        out,
        None,
        PipelineOptions([]),
    )


def run_tfma_per_example(assets, out, baseline: bool):
    """TFMA's own extractors and metrics evaluator (one combiner per metric, example and slice)
    on the same examples and EvalConfig: what the evaluator ran before its metrics were batched."""
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from tfx_bsl.public import tfxio

    eval_config = tfma_setup.build_eval_config(with_baseline=baseline)
    models = [
        tfma.default_eval_shared_model(
            assets["good"], eval_config=eval_config, model_name=tfma_setup.CANDIDATE
        )
    ]
    if baseline:
        models.append(
            tfma.default_eval_shared_model(
                assets["weak"], eval_config=eval_config, model_name=tfma_setup.BASELINE
            )
        )
    to_arrow = tfxio.TFExampleBeamRecord(
        physical_format="inmem", raw_record_column_name=tfma.ARROW_INPUT_COLUMN
    )
    with beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | beam.io.ReadFromTFRecord(
                examples_format.split_pattern(assets["examples"], "test"),
                compression_type=beam.io.filesystem.CompressionTypes.GZIP,
            )
            | to_arrow.BeamSource()
            | tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=models if baseline else models[0], eval_config=eval_config, output_path=out
            )
        )


def tfma_output(out):
    """({slice key: {(metric, model, is_diff): value}}, {slice key: {model: [actual][predicted]}})
    as TFMA's loaders read them."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.slicer import slicer_lib

    metrics, plots = {}, {}
    for record in tfma.load_metrics(out):
        key = slicer_lib.deserialize_slice_key(record.slice_key)
        metrics[key] = {
            (e.key.name, e.key.model_name, e.key.is_diff): e.value.double_value.value
            for e in record.metric_keys_and_values
        }
    for record in tfma.load_plots(out):
        key = slicer_lib.deserialize_slice_key(record.slice_key)
        for entry in record.plot_keys_and_values:
            (matrix,) = entry.value.multi_class_confusion_matrix_at_thresholds.matrices
            assert matrix.threshold == 0.0
            cells = np.zeros((10, 10))
            for cell in matrix.entries:
                cells[cell.actual_class_id, cell.predicted_class_id] += cell.num_weighted_examples
            plots.setdefault(key, {})[entry.key.model_name] = cells
    return metrics, plots


def independent_values(assets, baseline: bool):
    """The same output computed here from the tf.Examples and each model's `serving_images`
    probabilities (not the serving signature the evaluator calls), in float64."""
    import tensorflow as tf

    records = model_fixtures.read_records(
        glob.glob(examples_format.split_pattern(assets["examples"], "test"))
    )
    parsed = [tf.train.Example.FromString(r).features.feature for r in records]
    pixels = np.array([list(f["image"].int64_list.value) for f in parsed], np.float32)
    labels = np.array([f["label"].int64_list.value[0] for f in parsed])
    buckets = np.array([f["ink_density_bucket"].int64_list.value[0] for f in parsed])
    models = {"candidate": assets["good"], "baseline": assets["weak"]} if baseline else {"": assets["good"]}
    scores = {
        name: tf.saved_model.load(path)
        .signatures["serving_images"](images=tf.constant(pixels))["probabilities"]
        .numpy()
        .astype(np.float64)
        for name, path in models.items()
    }
    slices = [((), np.ones(len(labels), bool))]
    slices += [((("label", int(k)),), labels == k) for k in np.unique(labels)]
    slices += [((("ink_density_bucket", int(b)),), buckets == b) for b in np.unique(buckets)]
    metrics, plots = {}, {}
    for key, rows in slices:
        values = {}
        for name, p in scores.items():
            p, y = p[rows], labels[rows]
            clipped = np.clip(p, 1e-7, 1 - 1e-7)
            values[("example_count", name, False)] = rows.sum()
            values[("accuracy", name, False)] = (p.argmax(axis=1) == y).mean()
            values[("log_loss", name, False)] = np.mean(
                np.log(clipped.sum(axis=1)) - np.log(clipped[np.arange(len(y)), y])
            )
            matrix = np.zeros((10, 10))
            np.add.at(matrix, (y, p.argmax(axis=1)), 1)
            plots.setdefault(key, {})[name] = matrix
        if baseline:
            for metric in ("example_count", "accuracy", "log_loss"):
                values[(metric, "candidate", True)] = (
                    values[(metric, "candidate", False)] - values[(metric, "baseline", False)]
                )
        metrics[key] = values
    return metrics, plots


def assert_same(metrics, plots, expected_metrics, expected_plots, log_loss_rel=1e-5):
    assert set(metrics) == set(expected_metrics)  # the same slice keys, none more
    for key, expected in expected_metrics.items():
        assert set(metrics[key]) == set(expected), key  # the same metric keys, diffs included
        for name, value in expected.items():
            tolerance = abs(value) * log_loss_rel + 1e-6 if name[0] == "log_loss" else 1e-6
            assert metrics[key][name] == pytest.approx(value, abs=tolerance), (key, name)
    assert set(plots) == set(expected_plots)
    for key, expected in expected_plots.items():
        assert set(plots[key]) == set(expected)
        for model, matrix in expected.items():
            assert (plots[key][model] == matrix).all(), (key, model)


@pytest.mark.parametrize("baseline", [False, True], ids=["one model", "candidate and baseline"])
def test_output_equals_tfma_per_example_metrics_and_independent_values(tmp_path, assets, baseline):
    import tensorflow_model_analysis as tfma

    run_evaluator(assets, str(tmp_path / "batched"), baseline)
    run_tfma_per_example(assets, str(tmp_path / "tfma"), baseline)
    metrics, plots = tfma_output(str(tmp_path / "batched"))

    reference_metrics, reference_plots = tfma_output(str(tmp_path / "tfma"))
    assert_same(metrics, plots, reference_metrics, reference_plots, log_loss_rel=1e-6)
    # The Keras accuracy is a float32, as TFMA's: bit-identical, diffs included.
    for key, values in reference_metrics.items():
        assert {k: v for k, v in metrics[key].items() if k[0] == "accuracy"} == {
            k: v for k, v in values.items() if k[0] == "accuracy"
        }
    assert_same(metrics, plots, *independent_values(assets, baseline))

    for name in ["candidate", "baseline"] if baseline else [None]:
        loaded = tfma.load_eval_result(str(tmp_path / "batched"), model_name=name)
        reference = tfma.load_eval_result(str(tmp_path / "tfma"), model_name=name)
        assert sorted(str(key) for key, _ in loaded.slicing_metrics) == sorted(
            str(key) for key, _ in reference.slicing_metrics
        )
        assert sorted(str(key) for key, _ in loaded.plots) == sorted(str(key) for key, _ in reference.plots)
    validation = tfma.load_validation_result(str(tmp_path / "batched"))
    assert validation == tfma.load_validation_result(str(tmp_path / "tfma"))


def test_per_example_columns_follow_keras_and_tfma():
    import tensorflow as tf

    probabilities = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2, 1, 1])
    columns = slice_metrics.per_example_columns("candidate", probabilities, labels)
    keras = tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")(labels, probabilities).numpy()
    assert columns["candidate_loss"] == pytest.approx(
        keras, rel=1e-5
    )  # clipped 0 and 1, a row not summing to 1
    assert columns["candidate_correct"].tolist() == [True, False, False, False]
    # TFMA's confusion matrix at threshold 0: no predicted class where the top probability is 0.
    assert columns["candidate_matrix_class"].tolist() == [0, 1, 0, slice_metrics.NO_PREDICTED_CLASS_ID]
    with pytest.raises(PipelineError, match="label 3 is not one of model candidate's 3 classes"):
        slice_metrics.per_example_columns("candidate", probabilities, np.array([0, 3, 1, 1]))


def test_eval_config_asking_for_what_is_not_computed_is_refused():
    import tensorflow_model_analysis as tfma

    features = analysis.ROW_FEATURES
    config = tfma_setup.build_eval_config(with_baseline=True)
    slice_metrics.check_eval_config(config, features)
    config.metrics_specs[0].metrics.append(tfma.MetricConfig(class_name="AUC"))
    with pytest.raises(PipelineError, match="metric AUC named None is not one the evaluator computes"):
        slice_metrics.check_eval_config(config, features)
    crossed = tfma_setup.build_eval_config(with_baseline=False)
    crossed.slicing_specs.append(tfma.SlicingSpec(feature_keys=["label", "ink_density_bucket"]))
    with pytest.raises(PipelineError, match=r"slicing spec \['label', 'ink_density_bucket'\] .* is neither"):
        slice_metrics.check_eval_config(crossed, features)


def test_signature_calls_print_arrays_as_summaries_and_return_the_same(assets):
    import tensorflow as tf

    records = model_fixtures.read_records(
        glob.glob(examples_format.split_pattern(assets["examples"], "test"))
    )
    plain = tf.saved_model.load(assets["good"]).signatures["serving_default"]
    wrapped = model_loading.load_summarizing_signatures(assets["good"], (tf.saved_model.SERVING,))
    batch = tf.constant(records)
    expected = plain(examples=batch)["probabilities"].numpy()
    assert (
        wrapped.signatures["serving_default"](batch)["probabilities"].numpy() == expected
    ).all()  # positional, as TFMA calls it
    seen = []
    stub = model_loading._SummarizingCall(
        type(
            "Signature",
            (),
            {
                "structured_input_signature": ((), {}),
                "structured_outputs": {},
                "__call__": lambda self, *a, **k: seen.append(np.get_printoptions()["threshold"]),
            },
        )()
    )
    stub(batch)
    assert seen == [model_loading.PRINT_THRESHOLD] and np.get_printoptions()["threshold"] == 1000


def test_a_damaged_shard_is_an_input_error_naming_the_file(tmp_path):
    import apache_beam as beam

    split = tmp_path / "examples" / "Split-test"
    split.mkdir(parents=True)
    damaged = split / "data_tfrecord-00000-of-00001.gz"
    damaged.write_bytes(b"not a gzip TFRecord file")
    with pytest.raises(Exception, match=f"{damaged}: not a readable gzip TFRecord file"):
        with beam.Pipeline() as p:
            _ = p | analysis.ReadExamples(str(split / "*.gz"), None)


def test_shards_are_read_in_order_in_batches_of_the_inference_size(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "data_tfrecord-00000-of-00001.gz")
    records = [b"record %d" % i for i in range(25)]
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)
    batches = list(analysis._read_batches(path, 10))
    assert [len(b.records) for b in batches] == [10, 10, 5]
    assert [r for b in batches for r in b.records] == records
    assert [location for b in batches for location in b.locations] == [(path, i) for i in range(25)]


def test_decoding_takes_label_and_bucket_and_refuses_an_example_without_a_label_naming_its_file_and_record():
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    def example(**features):
        proto = tf.train.Example()
        for name, value in features.items():
            proto.features.feature[name].int64_list.value.append(value)
        return proto.SerializeToString()

    records = [example(label=3, ink_density_bucket=2), example(label=7)]
    decode = analysis.DecodeForEvaluation(tfma.ARROW_INPUT_COLUMN)
    (batch,) = decode.process(analysis.SerializedBatch(records, [("a.gz", 0), ("a.gz", 1)]))
    assert batch.to_pydict() == {
        "label": [[3], [7]],
        "ink_density_bucket": [[2], [evaluation.NO_BUCKET]],
        tfma.ARROW_INPUT_COLUMN: [[r] for r in records],
    }
    bad = analysis.SerializedBatch(  # two bad examples: the first is named
        [
            records[0],
            records[1],
            example(ink_density_bucket=1),
            example(label=2),
            example(ink_density_bucket=4),
        ],
        [("a.gz", 998), ("a.gz", 999), ("b.gz", 0), ("b.gz", 1), ("b.gz", 2)],
    )
    with pytest.raises(
        InputDataError,
        match=r"^b\.gz: record 0: a test example with no label, or a label or "
        r"ink_density_bucket that is not one int64 \(Feature: label \(data type: "
        r"int64\) is required",
    ):
        list(decode.process(bad))


def test_a_batch_that_fails_only_as_a_whole_is_refused_naming_its_files(monkeypatch):
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    def batch_parse_fails(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, "Feature: label is odd")

    good = tf.train.Example()
    good.features.feature["label"].int64_list.value.append(1)
    monkeypatch.setattr(tf.io, "parse_example", batch_parse_fails)
    batch = analysis.SerializedBatch([good.SerializeToString()] * 3, [("b.gz", 4), ("a.gz", 9), ("b.gz", 5)])
    with pytest.raises(
        InputDataError,
        match=r"^a\.gz, b\.gz: 3 test records that parse one by one but not together "
        r"\(Feature: label is odd\)$",
    ):
        list(analysis.DecodeForEvaluation(tfma.ARROW_INPUT_COLUMN).process(batch))


def test_the_heap_is_frozen_only_while_the_pipeline_runs():
    import gc

    with pytest.raises(RuntimeError):
        with analysis._older_objects_frozen():
            assert gc.get_freeze_count() > 0
            raise RuntimeError("a failing run")
    assert gc.get_freeze_count() == 0
