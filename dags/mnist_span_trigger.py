"""The new-span trigger: an Airflow event trigger (for an Asset's AssetWatcher) that fires once for
each new span of a data root, when the span's ready marker (`span-N/_SUCCESS`) lands.

A folder alone never fires it: a delivery still being copied has no marker yet. The trigger
fires for the newest ready span above the newest span it announced before, which it keeps in
the asset's state store (Airflow's database), so a restarted triggerer neither repeats a span
nor misses one that became ready while it was down. The first time it runs it announces the
newest ready span there is.

The triggerer imports this module by name (`mnist_span_trigger`), so the dags folder must be on
its Python path: scripts/ensure_airflow.sh does that for .venv-airflow.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

SPAN_DIR = re.compile(r"^span-(\d+)$")
ANNOUNCED_KEY = "announced_span"


def newest_ready_span(data_root: str, marker: str) -> int | None:
    """The highest N whose `data_root/span-N/marker` is a file; None when there is none (or no
    such folder)."""
    try:
        names = os.listdir(data_root)
    except FileNotFoundError:
        return None
    spans = [int(m.group(1)) for m in map(SPAN_DIR.match, names) if m]
    ready = [n for n in spans if os.path.isfile(os.path.join(data_root, f"span-{n}", marker))]
    return max(ready, default=None)


class SpanReadyTrigger(BaseEventTrigger):
    """Fires TriggerEvent({"data_root", "span", "marker"}) for each span of `data_root` whose
    `marker` file appears, newest first, once; checks every `poke_interval` seconds."""

    def __init__(self, data_root: str, marker: str = "_SUCCESS", poke_interval: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.data_root = data_root
        self.marker = marker
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.{type(self).__name__}",
            {"data_root": self.data_root, "marker": self.marker, "poke_interval": self.poke_interval},
        )

    def _state_store(self):
        """The watched asset's state store (set by the triggerer); None outside one."""
        return getattr(self, "asset_state_store", None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store = self._state_store()
        announced = await store.aget(ANNOUNCED_KEY) if store is not None else None
        self.log.info(
            "watching %s for span-N/%s (newest span announced so far: %s)",
            self.data_root,
            self.marker,
            announced,
        )
        while True:
            newest = await asyncio.to_thread(newest_ready_span, self.data_root, self.marker)
            if newest is not None and (announced is None or newest > int(announced)):
                marker_path = os.path.join(self.data_root, f"span-{newest}", self.marker)
                self.log.info("span %d is ready (%s)", newest, marker_path)
                yield TriggerEvent({"data_root": self.data_root, "span": newest, "marker": marker_path})
                # Recorded after the event: a triggerer that dies in between announces the span
                # again (a second run, all cache hits) rather than never.
                if store is not None:
                    await store.aset(ANNOUNCED_KEY, newest)
                announced = newest
            await asyncio.sleep(self.poke_interval)
