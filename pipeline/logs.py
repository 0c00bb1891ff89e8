"""Readable logs: our own progress at INFO; TensorFlow's, absl's and Beam's noise kept out.

Call `configure_logging` before TensorFlow is imported (it sets TF_CPP_MIN_LOG_LEVEL).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_NOISY = (
    "tensorflow",
    "absl",
    "apache_beam",
    "tfx_bsl",
    "tensorflow_data_validation",
    "tensorflow_model_analysis",
    "h5py",
    "urllib3",
    "google",
    "matplotlib",
)


def _drop_tensorflow_teardown_noise(
    unraisable, default_hook=sys.__unraisablehook__, is_finalizing=sys.is_finalizing
) -> None:
    """An unraisable-exception hook that drops one known harmless case and passes on the rest.

    TensorFlow 2.15's `AtomicFunction.__del__` reads a module global that the interpreter has
    already cleared while it tears modules down at exit, so every run that loaded a model used
    to end with "Exception ignored ... TypeError: 'NoneType' object is not subscriptable"
    tracebacks after its last log line: noise in cron mail that looks like a crash. Only that
    TypeError, from that method, during finalization, is dropped. (The defaults bind what the
    hook needs, because module globals may be gone by the time it runs.)
    """
    if (
        is_finalizing()
        and unraisable.exc_type is TypeError
        and getattr(unraisable.object, "__qualname__", "") == "AtomicFunction.__del__"
    ):
        return
    default_hook(unraisable)


def install_tensorflow_teardown_filter() -> None:
    """Makes `_drop_tensorflow_teardown_noise` this process's unraisable-exception hook."""
    sys.unraisablehook = _drop_tensorflow_teardown_noise


class _DropLibraryChatter(logging.Filter):
    """Drops INFO records that libraries (Beam) send through the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.WARNING


def configure_logging(verbose: bool = False) -> None:
    """Sets a compact format on the root logger; `verbose` lets library logs through."""
    # 3 hides TensorFlow's C++ ERROR lines too: on a CPU-only machine its import prints three
    # harmless "Unable to register cuDNN/cuFFT/cuBLAS factory" errors. Real failures still
    # reach the pipeline as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropLibraryChatter())
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        install_tensorflow_teardown_filter()
        try:
            import absl.logging  # noqa: PLC0415  optional: absl comes with TensorFlow, which may be absent

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
