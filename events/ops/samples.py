"""This process's minute-by-minute samples for the operations charts.

Fed once a second on the process's tick: the delivery lags the core recorded
since the last tick (events/metrics.py), the eviction counter and the open
streams; bounded to the last hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver

from events import metrics
from events.metrics import LagSummary
from events.signals import tick

if TYPE_CHECKING:
    from events.deliver.relay import Relay

WINDOW_MINUTES = 60


@dataclass
class Minute:
    """What one process saw during one minute."""

    lag_count: int = 0
    lag_total: float = 0.0
    lag_max: float = 0.0
    evictions: int = 0
    streams: int = 0

    @property
    def lag_mean(self) -> float:
        return self.lag_total / self.lag_count if self.lag_count else 0.0


class Recorder:
    """This process's minute-by-minute samples for the last hour (bounded: 60 entries)."""

    def __init__(self) -> None:
        self.minutes: dict[int, Minute] = {}
        self._evictions_seen: int | None = None

    def _minute(self, wall_clock: float) -> Minute:
        key = int(wall_clock // 60)
        minute = self.minutes.get(key)
        if minute is None:
            minute = self.minutes[key] = Minute()
            for old in [k for k in self.minutes if k <= key - WINDOW_MINUTES]:
                del self.minutes[old]
        return minute

    def record_lag(self, seconds: float, wall_clock: float | None = None) -> None:
        """One message handed to this process's connections, ``seconds`` after it was stored."""
        minute = self._minute(time.time() if wall_clock is None else wall_clock)
        minute.lag_count += 1
        minute.lag_total += seconds
        minute.lag_max = max(minute.lag_max, seconds)

    def record_lags(self, summary: LagSummary, wall_clock: float) -> None:
        """The lags of many messages at once: their count, sum and largest."""
        if not summary.count:
            return
        minute = self._minute(wall_clock)
        minute.lag_count += summary.count
        minute.lag_total += summary.total
        minute.lag_max = max(minute.lag_max, summary.largest)

    def sample(self, wall_clock: float, evictions_total: int, streams: int) -> None:
        """Called every second: the eviction counter's growth and the open streams now."""
        minute = self._minute(wall_clock)
        if self._evictions_seen is not None and evictions_total >= self._evictions_seen:
            minute.evictions += evictions_total - self._evictions_seen
        self._evictions_seen = evictions_total
        minute.streams = max(minute.streams, streams)

    def last_hour(self, wall_clock: float) -> list[tuple[int, Minute]]:
        """Every minute of the last hour, oldest first (empty minutes included)."""
        now = int(wall_clock // 60)
        return [(key, self.minutes.get(key, Minute())) for key in range(now - WINDOW_MINUTES + 1, now + 1)]


recorder = Recorder()


@receiver(tick, dispatch_uid="pushsite-operations-samples")
async def sample_on_tick(sender: Relay, now: float, **kwargs: Any) -> None:
    wall_clock = time.time()
    recorder.record_lags(metrics.take_lag_summary(), wall_clock)
    recorder.sample(wall_clock, metrics.stats.slow_reader_evictions, len(sender.streams))
