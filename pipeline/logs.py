"""Readable logs: our own progress at INFO; TensorFlow's, absl's and Beam's noise kept out.

Call `configure_logging` before TensorFlow is imported (it sets TF_CPP_MIN_LOG_LEVEL).
"""

from __future__ import annotations

import logging
import os
import warnings

_NOISY = ("tensorflow", "absl", "apache_beam", "tfx_bsl", "tensorflow_data_validation",
          "tensorflow_model_analysis", "h5py", "urllib3", "google", "matplotlib")


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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropLibraryChatter())
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
