"""The shipped reference statistics (data/reference/): their recorded digests, that they are the
counts of the shipped MNIST training files, that the script regenerating them gives the same
numbers through the project's own StatisticsGen (on a small slice), and how the format refuses
a broken file."""

import gzip
import importlib.util
import json
import os

import numpy as np
import pytest
from mnist_slices import TRAIN_IMAGES, TRAIN_LABELS, write_mnist_slice

from components.example_gen.download import CHECKSUMS
from pipeline.cli import main as run_local
from pipeline.config import DEFAULT_DATA_ROOT, DEFAULT_REFERENCE_PATH
from pipeline.core.digest import file_digest
from pipeline.core.errors import InputDataError
from pipeline.formats import reference as reference_format

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_BYTES = DEFAULT_REFERENCE_PATH.read_bytes()


def _script():
    """scripts/make_reference.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "make_reference", os.path.join(PROJECT, "scripts", "make_reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _direct_counts(data_root: str) -> tuple:
    """(label counts, pixel counts) of the training IDX files, counted with numpy alone."""
    with gzip.open(os.path.join(data_root, TRAIN_IMAGES)) as f:
        pixels = np.frombuffer(f.read()[16:], dtype=np.uint8)
    with gzip.open(os.path.join(data_root, TRAIN_LABELS)) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    return np.bincount(labels, minlength=10), np.bincount(pixels, minlength=256)


def test_shipped_reference_matches_its_recorded_digest():
    sums = reference_format.parse_sums(
        (DEFAULT_REFERENCE_PATH.parent / reference_format.SUMS_FILE).read_text()
    )
    assert sums == {DEFAULT_REFERENCE_PATH.name: file_digest(str(DEFAULT_REFERENCE_PATH))}
    parsed = reference_format.parse_reference(SHIPPED_BYTES, str(DEFAULT_REFERENCE_PATH))
    assert parsed.name == "the shipped MNIST reference"
    assert parsed.num_examples == 60000
    assert len(SHIPPED_BYTES) < 8192  # only what the checks need


def test_shipped_reference_names_the_shipped_training_files_by_digest():
    parsed = reference_format.parse_reference(SHIPPED_BYTES, str(DEFAULT_REFERENCE_PATH))
    assert set(parsed.sources) == {TRAIN_IMAGES, TRAIN_LABELS}
    for name, digests in parsed.sources.items():
        assert digests["sha256"] == file_digest(os.path.join(DEFAULT_DATA_ROOT, name))
        assert digests["sha256_decompressed"] == CHECKSUMS[name]  # the canonical MNIST's pinned digest


def test_shipped_reference_counts_are_those_of_the_training_files():
    """An independent count (numpy over the raw IDX bytes) of all 60,000 training digits."""
    parsed = reference_format.parse_reference(SHIPPED_BYTES, str(DEFAULT_REFERENCE_PATH))
    labels, pixels = _direct_counts(str(DEFAULT_DATA_ROOT))
    assert parsed.histograms["label"].tolist() == labels.tolist()
    assert parsed.histograms["image"].tolist() == pixels.tolist()
    assert json.loads(SHIPPED_BYTES)["generated_by"] == "scripts/make_reference.py --data-root data/mnist"


def test_regeneration_script_gives_the_same_numbers_on_a_slice_and_is_deterministic(tmp_path, capsys):
    """The script on 700 real digits (offset 3000) through ExampleGen and StatisticsGen: the counts
    equal a direct count, the digest is recorded, and a second run (--check) gives the same bytes."""
    script = _script()
    data = write_mnist_slice(str(tmp_path / "slice"), 700, 60, offset=3000)
    out = tmp_path / "ref" / "slice.json"
    assert script.main(["--data-root", data, "--out", str(out), "--name", "the slice reference"]) == 0
    parsed = reference_format.parse_reference(out.read_bytes(), str(out))
    labels, pixels = _direct_counts(data)
    assert parsed.name == "the slice reference" and parsed.num_examples == 700
    assert parsed.histograms["label"].tolist() == labels.tolist()
    assert parsed.histograms["image"].tolist() == pixels.tolist()
    doc = json.loads(out.read_bytes())
    assert sum(doc["splits"].values()) == 700 and set(doc["splits"]) == {"train", "eval"}
    assert doc["sources"][TRAIN_IMAGES]["sha256"] == file_digest(os.path.join(data, TRAIN_IMAGES))
    sums = reference_format.parse_sums((out.parent / reference_format.SUMS_FILE).read_text())
    assert sums == {"slice.json": file_digest(str(out))}

    capsys.readouterr()
    assert (
        script.main(["--data-root", data, "--out", str(out), "--name", "the slice reference", "--check"]) == 0
    )
    assert "up to date" in capsys.readouterr().out


def test_regeneration_script_refuses_a_folder_without_the_four_files(tmp_path, capsys):
    assert _script().main(["--data-root", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert "expected a folder holding the four MNIST IDX files" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _doc(**changes) -> bytes:
    doc = json.loads(SHIPPED_BYTES)
    for key, value in changes.items():
        if key == "label_counts":
            doc["histograms"]["label"]["counts"] = value
        elif key == "image_counts":
            doc["histograms"]["image"]["counts"] = value
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "format 'list'"),
        (_doc(format="reference_statistics/2"), "format 'reference_statistics/2'"),
        (_doc(name=""), "no 'name'"),
        (_doc(num_examples=0), "'num_examples' must be a positive integer"),
        (_doc(label_counts=[6000] * 9), "histograms.label.counts must be 10 non-negative integers"),
        (_doc(image_counts=[1.5] * 256), "histograms.image.counts must be 256 non-negative integers"),
        (_doc(image_counts=[0] * 256), "histograms.image is empty"),
        (_doc(num_examples=59999), "60000 labels counted, but num_examples is 59999"),
    ],
)
def test_a_broken_reference_is_refused_naming_the_file(data, message):
    with pytest.raises(InputDataError, match=f"^reference statistics /x/ref.json: .*{message}"):
        reference_format.parse_reference(data, "/x/ref.json")


def test_a_missing_reference_file_exits_2_naming_the_key_unless_the_check_is_off(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[validation]\nreference_path = "{tmp_path}/none.json"\n')
    common = [
        "--config",
        str(config),
        "--pipeline-root",
        str(tmp_path / "root"),
        "--to",
        "example_gen",
        "--data-root",
        write_mnist_slice(str(tmp_path / "data"), 30, 10),
    ]
    assert run_local(common) == 2
    [error] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "validation.reference_path: no reference statistics at " in error and "none.json" in error
    config.write_text(config.read_text() + "reference_check = false\n")
    assert run_local(common) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "[validation]\nreference_label_drift_linf = 0\n",
            "validation.reference_label_drift_linf: must be in (0, 1]",
        ),
        (
            "[validation]\nreference_pixel_drift_jsd = 1.5\n",
            "validation.reference_pixel_drift_jsd: must be in (0, 1]",
        ),
        ("[validation]\nreference_check = 'no'\n", "validation.reference_check: expected bool"),
        ("[validation]\nreference_path = 'gs://b/ref.json'\n", "validation.reference_path: only local paths"),
    ],
)
def test_bad_reference_settings_are_refused_naming_the_key(tmp_path, content, message):
    from pipeline.config import load_config
    from pipeline.core.errors import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        load_config(str(path))


FASHION_SLICE = {  # sha256 of the decompressed bytes, as in tests/data/fashion_mnist/README.md
    "train-images-idx3-ubyte.gz": "e40edda7e9d8af05f5b762673ec21bbef87429a0c217d9e7953c711409749e45",
    "train-labels-idx1-ubyte.gz": "78ada934314bea75dcf5d086dfaad6ca75d2ed2801b6e35392fdb406a6338c12",
    "t10k-images-idx3-ubyte.gz": "a83986794402227a1e9f8491954178a24b2e314b7081f0776c7dc9a675541994",
    "t10k-labels-idx1-ubyte.gz": "917f3dc1edaef97b3feb11cd8efd38ab95d9038ccccd2efaca468e935041743e",
}


def test_the_shipped_fashion_slice_is_the_documented_one():
    """The gate's non-digit test data is pinned: a replaced file would change what it proves."""
    import hashlib

    folder = os.path.join(PROJECT, "tests", "data", "fashion_mnist")
    for name, digest in FASHION_SLICE.items():
        with gzip.open(os.path.join(folder, name)) as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
