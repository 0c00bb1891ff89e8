"""The training distortions (components/trainer/augmentation.py) and `trainer.precision = "auto"`
(components/trainer/precision.py)."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.trainer import augmentation, model, precision
from pipeline.config import TrainerConfig
from pipeline.core import fingerprint
from pipeline.core.errors import ConfigError


def _warp(images, displacement):
    """`images` [N, H, W, 1] with output pixel (y, x) read at (y + dy, x + dx)."""
    grid_y, grid_x = tf.meshgrid(tf.range(28.0), tf.range(28.0), indexing="ij")
    displacement = tf.constant(displacement, tf.float32)
    return augmentation.sample_bilinear(
        tf.constant(images), grid_x + displacement[..., 0], grid_y + displacement[..., 1]
    )


def _run(tensor_fn):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        return session.run(tensor_fn())


def _stroke_image():
    image = np.zeros((28, 28), np.float32)
    image[8:20, 13] = 1.0
    image[8, 13:18] = 1.0
    return image


def test_zoom_scales_distances_from_the_centre():
    image = np.zeros((28, 28), np.float32)
    image[13:15, 21] = 1.0  # 7.5 pixels right of the centre (13.5)
    zoomed = _run(
        lambda: augmentation.transform_images(
            tf.constant(image[None, :, :, None]),
            tf.zeros([1]),
            tf.zeros([1]),
            tf.zeros([1]),
            tf.constant([0.8]),
        )[0, :, :, 0]
    )
    # 7.5 x 0.8 = 6 pixels right of the centre: column 19.5, spread over 19 and 20; the ink
    # (an area) shrinks by 0.8 squared.
    columns = np.nonzero(zoomed.sum(axis=0) > 1e-6)[0]
    assert set(columns) <= {19, 20} and zoomed[:, 19:21].sum() == pytest.approx(
        image.sum() * 0.8**2, rel=0.05
    )


def test_warp_with_zero_displacement_is_the_identity_and_integer_displacements_shift():
    image = _stroke_image()
    batch = image[None, :, :, None]
    same = _run(lambda: _warp(batch, np.zeros((1, 28, 28, 2))))
    np.testing.assert_allclose(same[0, :, :, 0], image, atol=1e-6)
    # Reading each pixel 3 to the left and 2 above shifts the digit right by 3 and down by 2.
    displacement = np.zeros((1, 28, 28, 2), np.float32)
    displacement[..., 0], displacement[..., 1] = -3.0, -2.0
    shifted = _run(lambda: _warp(batch, displacement))
    expected = np.zeros_like(image)
    expected[2:, 3:] = image[:-2, :-3]
    np.testing.assert_allclose(shifted[0, :, :, 0], expected, atol=1e-6)


def test_warp_reads_background_outside_the_image():
    image = np.ones((1, 28, 28, 1), np.float32)
    displacement = np.full((1, 28, 28, 2), 40.0, np.float32)
    out = _run(lambda: _warp(image, displacement))
    assert np.all(out == 0.0)


def test_smoothing_keeps_a_constant_field_constant_away_from_the_border():
    fields = np.full((1, 28, 28, 2), 0.5, np.float32)
    smoothed = _run(lambda: augmentation.smooth_fields(tf.constant(fields), 2.0))
    # The kernel reaches 3 sigma = 6 pixels: farther from the border nothing is cut off.
    np.testing.assert_allclose(smoothed[0, 6:22, 6:22], 0.5, atol=1e-5)
    assert smoothed[0, 0, 0, 0] < 0.5 * 0.8


def test_elastic_distortion_differs_per_digit_and_keeps_the_ink():
    image = _stroke_image()
    batch = np.repeat(image[None, :, :, None], 64, axis=0)
    hp = {"augment_elastic_alpha": 30.0, "augment_elastic_sigma": 5.0}
    out = _run(lambda: augmentation.augment(tf.constant(batch), hp))[..., 0]
    changed = np.abs(out - image[None]).sum(axis=(1, 2))
    assert np.all(changed > 0.5)  # every digit distorted, each its own way
    assert len({round(float(c), 3) for c in changed}) > 32
    # Stretching and squeezing change a thin stroke's ink locally; on average it is kept, and
    # no digit is erased.
    ink = out.sum(axis=(1, 2))
    assert abs(ink.mean() - image.sum()) < 0.1 * image.sum() and ink.min() > 0.5 * image.sum()


def test_augmentation_switches_and_settings_are_checked():
    assert not augmentation.is_on({})
    assert augmentation.is_on({"augment_elastic_alpha": 1.0})
    base = {
        "conv1_filters": 4,
        "conv2_filters": 4,
        "kernel_size": 3,
        "dense_units": 8,
        "dropout_rate": 0.1,
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "precision": "float32",
    }
    with pytest.raises(ConfigError, match="trainer.augment_max_scale"):
        model.hyperparameters({**base, "augment_max_scale": 0.9})
    with pytest.raises(ConfigError, match="trainer.augment_elastic_sigma"):
        model.hyperparameters({**base, "augment_elastic_sigma": 0.0})
    with pytest.raises(ConfigError, match="trainer.precision"):
        model.hyperparameters({**base, "precision": "float16"})


def test_elastic_distortion_runs_in_training_graphs_only():
    params = {
        "conv1_filters": 4,
        "conv2_filters": 4,
        "kernel_size": 3,
        "dense_units": 8,
        "dropout_rate": 0.1,
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "precision": "float32",
        "augment_elastic_alpha": 30.0,
    }

    def op_types(mode):
        with tf.Graph().as_default() as graph:
            features = {"image": tf.zeros([2, 784])}
            labels = None if mode == tf.estimator.ModeKeys.PREDICT else tf.zeros([2], tf.int64)
            model.model_fn(features, labels, mode, params)
            return {op.type for op in graph.get_operations()}

    assert "Einsum" in op_types(tf.estimator.ModeKeys.TRAIN)  # the smoothing of the field
    assert "Einsum" not in op_types(tf.estimator.ModeKeys.PREDICT)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert precision.cpu_bfloat16_flags(str(cpuinfo)) == ("avx512_bf16",)
    cpuinfo.write_text("flags\t\t: fpu sse avx2\n")
    assert precision.cpu_bfloat16_flags(str(cpuinfo)) == ()
    assert precision.cpu_bfloat16_flags(str(tmp_path / "absent")) == ()


def test_auto_needs_the_instructions_and_a_measured_speedup():
    assert precision.choose((), None)[0] == "float32"
    slower, why = precision.choose(("avx512_bf16",), 0.6)
    assert slower == "float32" and "AVX512-BF16" in why and "0.600x" in why
    # Just under the threshold the reason must not read as if it were at it.
    assert "ran 1.149x float32 here, under the 1.15x" in precision.choose(("avx512_bf16",), 1.149)[1]
    faster, why = precision.choose(("avx512_bf16", "amx_bf16"), 1.7)
    assert faster == "mixed_bfloat16" and "AMX-BF16" in why and "1.70x" in why


def test_resolve_keeps_configured_precisions_and_refuses_others():
    assert precision.resolve("float32")[0] == "float32"
    assert precision.resolve("mixed_bfloat16")[0] == "mixed_bfloat16"
    with pytest.raises(ValueError, match="float16"):
        precision.resolve("float16")


def test_auto_resolves_to_this_machines_recorded_decision(precision_record):
    chosen, why = precision.resolve("auto")
    if not precision.cpu_bfloat16_flags():
        assert chosen == "float32" and "no AVX512-BF16" in why
        assert not os.path.exists(precision_record)
    else:
        with open(precision_record) as f:
            machines = json.load(f)["machines"]
        recorded = machines[precision.machine_key(precision.machine())]
        assert chosen == recorded["precision"]
        assert (
            why == f"{recorded['reason']}; decided {recorded['decided_at']}, recorded in {precision_record}"
        )
    assert (
        model.hyperparameters(
            {
                "conv1_filters": 4,
                "conv2_filters": 4,
                "kernel_size": 3,
                "dense_units": 8,
                "dropout_rate": 0.1,
                "learning_rate": 1e-3,
                "optimizer": "adam",
                "precision": "auto",
            }
        )["precision"]
        == chosen
    )


def _cpu(tmp_path, name="Test CPU A", flags="fpu sse avx512f avx512_bf16"):
    """A /proc/cpuinfo with the model `name` and `flags`."""
    path = tmp_path / f"cpuinfo-{name.replace(' ', '_')}-{len(flags)}"
    path.write_text(f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n\n")
    return str(path)


def _measuring(speedup, probes):
    """A probe that records its call in `probes` and measures `speedup`."""

    def probe():
        probes.append(speedup)
        return speedup

    return probe


def _no_probe():
    raise AssertionError("probed although a decision was recorded")


def test_a_recorded_decision_is_reused_without_probing(tmp_path):
    cpu, record, probes = _cpu(tmp_path), tmp_path / "cache" / "precision.json", []
    first = precision.decide_auto(cpu, str(record), _measuring(1.7, probes))
    assert first[0] == "mixed_bfloat16" and "1.70x" in first[1] and str(record) in first[1]
    assert precision.decide_auto(cpu, str(record), _no_probe) == first
    assert probes == [1.7]
    saved = json.loads(record.read_text())
    assert saved["format"] == precision.RECORD_FORMAT and len(saved["machines"]) == 1
    (decision,) = saved["machines"].values()
    assert decision["precision"] == "mixed_bfloat16" and decision["speedup"] == 1.7
    assert decision["cpu"] == "Test CPU A" and "avx512_bf16" in decision["flags"]


def test_another_cpu_probes_again_and_both_decisions_stay(tmp_path):
    record, probes = str(tmp_path / "precision.json"), []
    cpu_a, cpu_b = _cpu(tmp_path), _cpu(tmp_path, "Test CPU B")
    cpu_a_with_amx = _cpu(tmp_path, flags="fpu sse avx512f avx512_bf16 amx_bf16 amx_tile")
    assert precision.decide_auto(cpu_a, record, _measuring(1.7, probes))[0] == "mixed_bfloat16"
    assert precision.decide_auto(cpu_b, record, _measuring(0.6, probes))[0] == "float32"
    assert precision.decide_auto(cpu_a_with_amx, record, _measuring(0.9, probes))[0] == "float32"
    assert probes == [1.7, 0.6, 0.9]
    assert precision.decide_auto(cpu_a, record, _no_probe)[0] == "mixed_bfloat16"
    assert len(json.loads(open(record).read())["machines"]) == 3
    # Another TensorFlow is another machine key too.
    identity = precision.machine(cpu_a)
    assert precision.machine_key(identity) != precision.machine_key({**identity, "tensorflow": "0.0"})


@pytest.mark.parametrize(
    "content, warning",
    [
        ("{not json", "unreadable"),
        ("[]", "not a decisions record"),
        (
            '{"format": 1, "machines": {"KEY": {"precision": "float16", "reason": "r", "decided_at": "d"}}}',
            "no usable",
        ),
        ('{"format": 1, "machines": {"KEY": {"precision": "float32"}}}', "no usable"),
    ],
)
def test_a_corrupt_record_is_decided_again_with_a_warning(tmp_path, caplog, content, warning):
    cpu, record, probes = _cpu(tmp_path), tmp_path / "precision.json", []
    record.write_text(content.replace("KEY", precision.machine_key(precision.machine(cpu))))
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        chosen, _ = precision.decide_auto(cpu, str(record), _measuring(0.6, probes))
    assert chosen == "float32" and probes == [0.6]
    assert any(str(record) in r.getMessage() and warning in r.getMessage() for r in caplog.records)
    # Rewritten whole: the next process reads the new decision.
    assert precision.decide_auto(cpu, str(record), _no_probe)[0] == "float32"


def test_a_record_that_cannot_be_written_leaves_the_decision_to_this_process(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    record, probes = str(blocker / "precision.json"), []
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        chosen, why = precision.decide_auto(_cpu(tmp_path), record, _measuring(1.7, probes))
    assert chosen == "mixed_bfloat16" and probes == [1.7] and "recorded in" not in why
    assert any(record in r.getMessage() and precision.RECORD_ENV in r.getMessage() for r in caplog.records)


def test_a_cpu_without_the_instructions_trains_float32_without_probe_or_record(tmp_path):
    record = tmp_path / "precision.json"
    chosen, why = precision.decide_auto(_cpu(tmp_path, flags="fpu sse avx2"), str(record), _no_probe)
    assert chosen == "float32" and "no AVX512-BF16" in why and not record.exists()


DECIDE_IN_A_PROCESS = """
import sys, time
from components.trainer import precision

def probe():
    print("probed", flush=True)
    time.sleep(1.0)  # both processes are deciding at once
    return float(sys.argv[3])

print("decided", *precision.decide_auto(sys.argv[1], sys.argv[2], probe))
"""


def test_two_processes_starting_together_decide_alike(tmp_path):
    """Each process would measure otherwise (1.7x, 0.6x); the lock makes one probe and the
    other read its decision."""
    cpu, record = _cpu(tmp_path), str(tmp_path / "precision.json")
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", DECIDE_IN_A_PROCESS, cpu, record, speedup],
            cwd=project,
            stdout=subprocess.PIPE,
            text=True,
        )
        for speedup in ("1.7", "0.6")
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert sum(output.count("probed") for output in outputs) == 1
    decided = [line for output in outputs for line in output.splitlines() if line.startswith("decided")]
    assert len(decided) == 2 and decided[0] == decided[1]


def test_the_trainer_cache_key_holds_the_decided_precision(tmp_path, monkeypatch):
    def key(**settings):
        return fingerprint.cache_key("trainer", TrainerConfig(**settings), (), {})

    assert key(precision="float32") != key(precision="mixed_bfloat16")
    assert key() == key(precision=precision.resolve("auto")[0])
    # On machines that decided otherwise, "auto" is keyed as they decided.
    for cpu_name, speedup, decided in (("Fast CPU", 1.7, "mixed_bfloat16"), ("Slow CPU", 0.6, "float32")):
        monkeypatch.setattr(precision, "CPUINFO", _cpu(tmp_path, cpu_name))
        monkeypatch.setenv(precision.RECORD_ENV, str(tmp_path / f"{cpu_name}.json"))
        assert precision.decide_auto(probe=_measuring(speedup, []))[0] == decided
        assert key() == key(precision=decided)


def test_auto_resolves_inside_a_model_functions_graph_too():
    with tf.Graph().as_default():
        assert precision.probe_speedup() > 0


def test_one_resampling_of_the_affine_grid_matches_the_affine_op():
    # With an elastic distortion the affine transform is applied through sample_bilinear; it
    # must read the same pixels as ImageProjectiveTransformV3 does.
    image = _stroke_image()

    def both():
        batch = tf.constant(np.stack([image, image.T])[..., None])
        angles, shift_x, shift_y, scales = (
            tf.constant(v) for v in ([0.3, -0.2], [1.5, -2.0], [-0.5, 1.0], [0.9, 1.1])
        )
        by_op = augmentation.transform_images(batch, angles, shift_x, shift_y, scales)
        t = augmentation.affine_transforms(angles, shift_x, shift_y, scales)[:, :, None, None]
        grid_y, grid_x = tf.meshgrid(tf.range(28.0), tf.range(28.0), indexing="ij")
        by_sampling = augmentation.sample_bilinear(
            batch,
            t[:, 0] * grid_x + t[:, 1] * grid_y + t[:, 2],
            t[:, 3] * grid_x + t[:, 4] * grid_y + t[:, 5],
        )
        return by_op, by_sampling

    by_op, by_sampling = _run(both)
    assert by_op.sum() > 5
    np.testing.assert_allclose(by_sampling, by_op, atol=1e-4)
