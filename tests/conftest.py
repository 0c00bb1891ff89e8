"""Shared fixtures: small slices of the real digits, never the whole set."""

import atexit
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mnist_slices import write_mnist_slice  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def precision_record(tmp_path_factory):
    """The file where this session records what trainer.precision "auto" decides (not the
    user's, under ~/.cache); processes the tests start (cluster tasks, CLI runs) inherit it."""
    from components.trainer import precision

    path = tmp_path_factory.mktemp("precision") / "precision.json"
    previous = os.environ.get(precision.RECORD_ENV)
    os.environ[precision.RECORD_ENV] = str(path)
    yield str(path)
    if previous is None:
        del os.environ[precision.RECORD_ENV]
    else:
        os.environ[precision.RECORD_ENV] = previous


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory) -> str:
    """A data root with 2,000 training and 500 test digits (flat layout, no spans)."""
    return write_mnist_slice(str(tmp_path_factory.mktemp("mnist_small")), 2000, 500)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> str:
    """A data root with 240 training and 60 test digits, for fast unit tests."""
    return write_mnist_slice(str(tmp_path_factory.mktemp("mnist_tiny")), 240, 60)


@pytest.fixture(scope="session")
def mariadb():
    """A real MariaDB server (Debian's mariadb-server, installed and started by
    scripts/ensure_mariadb.sh when needed) with an account of this session's own
    (tests/mariadb_server.py)."""
    import mariadb_server

    server = mariadb_server.start()
    yield server
    mariadb_server.stop(server)


def pytest_configure(config):
    """At exit, the same filter the CLI installs, so CI's log ends with pytest's summary rather
    than TensorFlow's teardown tracebacks (see pipeline.logs). atexit, because pytest restores
    its own unraisable hook after pytest_unconfigure; atexit runs after that, before teardown."""
    from pipeline.logs import install_tensorflow_teardown_filter

    atexit.register(install_tensorflow_teardown_filter)
