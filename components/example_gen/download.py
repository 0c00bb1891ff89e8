"""Downloads the four MNIST files and verifies them against pinned checksums.

    python -m components.example_gen.download --dest data/mnist

Mirrors are tried in order. A file is accepted only when the sha256 of its *decompressed*
bytes equals the pinned checksum (mirrors compress differently, the content is the same). An
accepted file is written to a temporary name in the destination folder and renamed into
place, so the destination never holds a partial or unverified file. A file already present
with the right content is kept. Nothing is ever unpickled.

Exit status: 0 when all four files are in place, 3 when a file could not be obtained from any
mirror (the error line names it and every mirror's reason), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import os
import sys
import urllib.request
import zlib
from collections.abc import Sequence

from pipeline.core.atomic_files import write_bytes_atomic
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.formats.idx import DATASET_FILES

log = logging.getLogger(__name__)

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# sha256 of the decompressed IDX bytes (the originals published by LeCun, Cortes and Burges).
CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
assert set(CHECKSUMS) == set(DATASET_FILES)

# The largest file is ~9.9 MB compressed; refuse anything far bigger rather than fill the disk.
MAX_DOWNLOAD_BYTES = 64 << 20
# The largest decompressed file is ~47 MB.
MAX_CONTENT_BYTES = 256 << 20
TIMEOUT_S = 60.0


def fetch(url: str, timeout: float = TIMEOUT_S, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """Returns the body of `url`; OSError (urllib errors included) on failure or oversize."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise OSError(f"response larger than {max_bytes} bytes")
    return body


def content_sha256(compressed: bytes, max_bytes: int = MAX_CONTENT_BYTES) -> str:
    """Hex sha256 of the gzip-decompressed bytes, hashed as a stream.

    Raises ValueError when `compressed` is not valid gzip (bad header, CRC, truncated) or
    decompresses to more than `max_bytes`.
    """
    h = hashlib.sha256()
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(compressed), mode="rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                total += len(chunk)
                if total > max_bytes:
                    raise ValueError(f"decompresses to more than {max_bytes} bytes")
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"not a valid gzip file ({' '.join(str(e).split())})") from e
    return h.hexdigest()


def _already_present(path: str, expected: str) -> bool:
    """True when `path` exists and its decompressed content has the `expected` sha256."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            return content_sha256(f.read()) == expected
    except (OSError, ValueError):
        return False


def download_file(name: str, dest: str, mirrors: Sequence[str] = MIRRORS, force: bool = False) -> str:
    """Puts the verified MNIST file `name` at `<dest>/<name>`; returns which mirror served it.

    Returns "present" when a verified copy was already there (and `force` is False).
    Raises InputDataError naming the file and every mirror's reason when none served a file
    with the pinned checksum; the destination is then left as it was.
    """
    if name not in CHECKSUMS:
        raise ValueError(f"unknown MNIST file {name!r} (known: {', '.join(CHECKSUMS)})")
    expected = CHECKSUMS[name]
    path = os.path.join(dest, name)
    if not force and _already_present(path, expected):
        log.info("%s: already present with the pinned checksum", path)
        return "present"
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            body = fetch(url)
            actual = content_sha256(body)
        except (OSError, ValueError) as e:  # urllib.error.URLError is an OSError
            reasons.append(f"{url}: {' '.join(str(e).split())}")
            log.warning("%s", reasons[-1])
            continue
        if actual != expected:
            reasons.append(f"{url}: content sha256 {actual}, expected {expected}")
            log.warning("%s", reasons[-1])
            continue
        write_bytes_atomic(path, body)
        log.info("%s: verified, %d bytes from %s", path, len(body), url)
        return mirror
    raise InputDataError(f"{path}: no mirror served a file with the pinned checksum ({'; '.join(reasons)})")


def download_all(dest: str, mirrors: Sequence[str] = MIRRORS, force: bool = False) -> dict:
    """Downloads and verifies all four files into `dest` (created if needed).

    Returns file name -> mirror (or "present"). Raises InputDataError on the first file that
    no mirror could serve; files verified before it stay in place (each one is complete).
    """
    os.makedirs(dest, exist_ok=True)
    return {name: download_file(name, dest, mirrors, force) for name in DATASET_FILES}


def main(argv: Sequence[str] | None = None, prog: str = "python -m components.example_gen.download") -> int:
    """Command line of the download (`prog` is the name its help shows); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download the MNIST IDX files and verify their pinned checksums.",
    )
    parser.add_argument("--dest", required=True, help="folder to put the four .gz files in")
    parser.add_argument(
        "--mirror",
        action="append",
        dest="mirrors",
        metavar="URL",
        help="base URL to try (repeatable, tried in order; default: built-in mirrors)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download even when a verified copy is already present"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        results = download_all(args.dest, args.mirrors or MIRRORS, args.force)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the destination folder itself cannot be written
        print(f"error: {args.dest}: {e.strerror or e}", file=sys.stderr)
        return 1
    for name, source in results.items():
        print(f"{os.path.join(args.dest, name)}: ok ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
