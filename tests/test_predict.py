"""`run_local.py predict`: digits from PNG and IDX files classified by the served model, which is
checked against its push record in ML Metadata before it is loaded."""

import os
import re
import shutil
import struct
import zlib

import numpy as np
import pytest
from mnist_slices import TEST_IMAGES, TEST_LABELS, read_real, write_idx
from model_fixtures import build_model
from PIL import Image

from pipeline.cli import main
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, InputDataError, ModelIntegrityError
from pipeline.core.metadata import open_store
from pipeline.digit_inputs import frame_digit, read_digits
from pipeline.formats.model import SERVING_SUBDIR
from pipeline.predict import classify, predict_files, resolve_served_model

N_DIGITS = 12
OFFSET = 2000  # test digits the fixture model never saw (it trains on training digits)


def _record_push(root: str, serving_dir: str, version: int, digest: str) -> int:
    """Records a Model with `digest` and its push as `version`, as the trainer and pusher do."""
    store = open_store(root)
    contexts = store.run_contexts(f"run-{version}", {"pipeline_root": root})
    trainer = store.start_execution("trainer", f"run-{version}", "", contexts, {})
    model_id = store.complete_execution(
        trainer, {"model": ("Model", f"{root}/trainer/model/{trainer}", {"digest": digest})}, {}, contexts
    )["model"]
    pusher = store.start_execution("pusher", f"run-{version}", "", contexts, {"model": model_id})
    store.complete_execution(
        pusher,
        {
            "pushed_model": (
                "PushedModel",
                f"{root}/pusher/{pusher}",
                {"pushed": 1, "version": version, "model_id": model_id, "serving_dir": serving_dir},
            )
        },
        {},
        contexts,
    )
    return model_id


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A pipeline root whose serving dir holds versions 9 (a chance-level model) and 10 (trained),
    both with push records: the newest is 10, numerically (not "9" > "10")."""
    base = tmp_path_factory.mktemp("predict")
    root, serving = str(base / "root"), str(base / "root" / "serving")
    for version, steps in ((9, 0), (10, 40)):
        model_uri = str(base / f"model-{version}")
        digest = build_model(model_uri, steps=steps, seed=version)
        shutil.copytree(os.path.join(model_uri, SERVING_SUBDIR), os.path.join(serving, str(version)))
        _record_push(root, serving, version, digest)
    images = read_real(TEST_IMAGES, N_DIGITS, OFFSET)
    labels = read_real(TEST_LABELS, N_DIGITS, OFFSET)
    expected, _ = classify(os.path.join(serving, "10"), images.reshape(-1, 784).astype(np.float32))
    return {
        "base": base,
        "root": root,
        "serving": serving,
        "images": images,
        "labels": labels,
        "expected": expected,
    }


def _png(path, array, mode=None) -> str:
    image = Image.fromarray(array.astype(np.uint8))
    (image.convert(mode) if mode else image).save(path)
    return str(path)


def test_served_model_is_the_newest_version_verified_against_its_push_record(served):
    model = resolve_served_model(served["serving"], served["root"])
    assert model.version == 10 and model.verified and model.path.endswith(os.sep + "10")
    # The trained model is right on most unseen digits (a sanity check of the fixture itself).
    assert np.mean(served["expected"] == served["labels"]) >= 0.7


def test_png_digits_are_classified_like_the_raw_pixels(served, tmp_path):
    paths = [_png(tmp_path / f"d{i}.png", image) for i, image in enumerate(served["images"])]
    model, predictions = predict_files(paths, served["serving"], served["root"])
    assert model.version == 10
    assert [p.digit for p in predictions] == list(served["expected"])
    assert all(0.0 < p.confidence <= 1.0 and not p.image.inverted for p in predictions)
    assert (
        predictions[0].line() == f"{paths[0]}[0] -> {predictions[0].digit} ({predictions[0].confidence:.4f})"
    )


def test_dark_on_light_and_large_rgb_pngs_are_inverted_and_framed(served, tmp_path):
    paths = []
    for i, image in enumerate(served["images"]):
        inverted = Image.fromarray(255 - image)
        if i % 2:  # every other one: 4x larger, RGB, shifted inside a wider canvas
            canvas = Image.new("L", (150, 120), 255)
            canvas.paste(inverted.resize((112, 112), Image.Resampling.BICUBIC), (30, 4))
            inverted = canvas.convert("RGB")
        path = str(tmp_path / f"dark{i}.png")
        inverted.save(path)
        paths.append(path)
    _, predictions = predict_files(paths, served["serving"], served["root"])
    assert all(
        p.image.inverted and "[inverted: dark digit on a light background]" in p.line() for p in predictions
    )
    agree = np.mean([p.digit for p in predictions] == served["expected"])
    assert agree >= 0.8, agree
    # With inversion off, the same dark-on-light digits are not what the model was trained on.
    _, raw = predict_files(paths[:1], served["serving"], served["root"], invert="no")
    assert not raw[0].image.inverted


def test_framing_a_scaled_up_mnist_digit_restores_it():
    digit = read_real(TEST_IMAGES, 1, OFFSET)[0].astype(np.float32)
    big = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC), np.float32)
    framed = frame_digit(np.pad(big, ((10, 40), (60, 5))))
    assert framed.shape == (28, 28)
    assert np.abs(framed - digit).mean() < 20, np.abs(framed - digit).mean()
    assert not frame_digit(np.zeros((50, 40))).any()


def test_idx_file_gives_one_line_per_record_in_order(served, tmp_path):
    path = str(tmp_path / "t10k-images-idx3-ubyte.gz")
    write_idx(path, served["images"])
    _, predictions = predict_files([path], served["serving"], served["root"])
    assert [p.image.index for p in predictions] == list(range(N_DIGITS))
    assert [p.digit for p in predictions] == list(served["expected"])


def test_cli_prints_one_line_per_digit(served, tmp_path, capsys):
    png = _png(tmp_path / "one.png", served["images"][0])
    idx = str(tmp_path / "few.gz")
    write_idx(idx, served["images"][:3])
    code = main(["predict", "--pipeline-root", served["root"], png, idx])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    expected = [served["expected"][0]] + list(served["expected"][:3])
    names = [f"{png}[0]", f"{idx}[0]", f"{idx}[1]", f"{idx}[2]"]
    assert len(out) == 4
    for line, name, digit in zip(out, names, expected):
        assert re.fullmatch(rf"{re.escape(name)} -> {digit} \((0|1)\.\d{{4}}\)", line), line


def _flip_variables_byte(model_dir: str) -> None:
    variables = os.path.join(model_dir, "variables")
    data = sorted(n for n in os.listdir(variables) if n.startswith("variables.data"))[0]
    with open(os.path.join(variables, data), "r+b") as f:
        f.seek(8)
        byte = f.read(1)
        f.seek(8)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_tampered_serving_version_is_refused_before_loading(served, tmp_path, capsys):
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    shutil.copytree(os.path.join(served["serving"], "10"), os.path.join(serving, "1"))
    _record_push(root, serving, 1, directory_digest(os.path.join(serving, "1")))
    assert resolve_served_model(serving, root).verified
    _flip_variables_byte(os.path.join(serving, "1"))
    png = _png(tmp_path / "d.png", served["images"][0])
    with pytest.raises(ModelIntegrityError, match=r"serving version 1 at .*: digest .* does not match"):
        predict_files([png], serving, root)
    code = main(["predict", "--pipeline-root", root, "--serving-dir", serving, png])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.startswith("error: serving version 1 at ") and "refusing to load" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_version_without_push_record_needs_allow_unverified(served, tmp_path, capsys):
    serving = str(tmp_path / "elsewhere")
    shutil.copytree(os.path.join(served["serving"], "10"), os.path.join(serving, "3"))
    png = _png(tmp_path / "d.png", served["images"][0])
    with pytest.raises(ModelIntegrityError, match="no push record .* --allow-unverified"):
        predict_files([png], serving, served["root"])
    model, predictions = predict_files([png], serving, served["root"], allow_unverified=True)
    assert model.version == 3 and not model.verified
    assert predictions[0].digit == served["expected"][0]
    assert main(["predict", "--pipeline-root", served["root"], "--serving-dir", serving, png]) == 1
    assert (
        main(
            [
                "predict",
                "--pipeline-root",
                served["root"],
                "--serving-dir",
                serving,
                "--allow-unverified",
                png,
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(f"{png}[0] -> ")


def test_empty_serving_dir_is_a_usage_error(served, tmp_path, capsys):
    png = _png(tmp_path / "d.png", served["images"][0])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no model version published"):
        predict_files([png], str(tmp_path / "empty"), served["root"])
    assert (
        main(["predict", "--pipeline-root", served["root"], "--serving-dir", str(tmp_path / "empty"), png])
        == 2
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, not an image", "neither a PNG image nor a gzip IDX images file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a readable PNG image"),
        (b"\x1f\x8b\x08\x00garbage", "not a valid gzip file|corrupt gzip data|truncated gzip"),
    ],
)
def test_bad_files_fail_with_one_line_naming_the_file(served, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    with pytest.raises(InputDataError, match=message) as info:
        read_digits(str(bad))
    assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)
    good = _png(tmp_path / "good.png", served["images"][0])
    assert main(["predict", "--pipeline-root", served["root"], good, str(bad)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing is printed when any input is bad
    assert captured.err.startswith(f"error: {bad}: ")


def test_idx_labels_file_and_missing_file_are_refused(tmp_path):
    labels = str(tmp_path / "labels.gz")
    write_idx(labels, np.arange(5, dtype=np.uint8))
    with pytest.raises(InputDataError, match="magic number 0x00000801"):
        read_digits(labels)
    with pytest.raises(InputDataError, match="file not found"):
        read_digits(str(tmp_path / "missing.png"))


def test_transparent_png_is_laid_on_white(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[8:20, 12:16] = (0, 0, 0, 255)  # an opaque black bar on a transparent canvas
    path = str(tmp_path / "t.png")
    Image.fromarray(rgba, "RGBA").save(path)
    [digit] = read_digits(path)
    assert digit.inverted
    pixels = digit.pixels.reshape(28, 28)
    assert pixels[10, 13] == 255 and pixels[0, 0] == 0


@pytest.mark.parametrize("side, message", [(8000, "too large"), (100_000, "decompression bomb")])
def test_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path, side, message):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale, no pixel data
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(InputDataError, match=message):
        read_digits(str(path))
