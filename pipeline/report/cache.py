"""A small content-addressed cache of the report's model analysis, under the pipeline root.

An entry is `<pipeline_root>/report_cache/<sha256 of the key>.json`, holding the key and the
value. The key names what the value was computed from by content (model digest, examples and
evaluation digests, limits, format version), so an entry can never describe other artifacts;
a damaged or foreign entry is ignored. Entries are written atomically; the oldest are pruned
beyond `MAX_ENTRIES`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Optional

from pipeline.atomic_files import write_json_atomic

log = logging.getLogger(__name__)

CACHE_DIR = "report_cache"
MAX_ENTRIES = 32


def _path(pipeline_root: str, key: dict) -> str:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return os.path.join(pipeline_root, CACHE_DIR, f"{name}.json")


def load(pipeline_root: str, key: dict) -> Optional[dict]:
    """The cached value for `key`, or None when absent, unreadable, or stored under another key."""
    path = _path(pipeline_root, key)
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("report cache entry %s unreadable (%s); recomputing", path, e)
        return None
    if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key)):
        return None
    try:
        os.utime(path)  # recently used entries survive pruning
    except OSError:
        pass
    return entry.get("value")


def store(pipeline_root: str, key: dict, value: dict) -> None:
    """Saves `value` under `key` (atomic replace), then prunes the oldest entries."""
    path = _path(pipeline_root, key)
    write_json_atomic(path, {"key": key, "value": value})
    directory = os.path.dirname(path)
    entries = sorted((e for e in os.scandir(directory) if e.name.endswith(".json") and e.is_file()),
                     key=lambda e: e.stat().st_mtime, reverse=True)
    for stale in entries[MAX_ENTRIES:]:
        try:
            os.unlink(stale.path)
        except OSError:
            pass  # pruning is best effort; a leftover entry is harmless
