"""Streams' history reads in batches: one query per channel for the streams catching up together.

After a restart every stream resumes a little behind and reads what it missed
(``Stream._catch_up``, events/deliver/stream.py). One query each, in one thread hop
each, and each message encoded once per stream, paced the reconnect storm
(docs/performance.md, issue 16). Here the reads asked for within one loop turn, or
while the previous batch is in the database thread (events/deliver/batching.py),
run in one hop; the reads of one channel whose positions lie within ``limit`` of
the lowest are served by one query from the lowest position, each stream given its
own slice: exactly the rows :func:`events.deliver.history.frames_after` would give
it alone, read no earlier than it asked. So the stream's seam between replay and
live (it goes live only when a read after the last frame it saw live ends short)
is what it was.

Memory stays bounded as before: one query returns at most ``2 x limit`` rows
(the spread of the positions it serves is at most ``limit``), encoded once and
shared by the streams it serves, and a batch holds at most ``MAX_BATCH`` reads.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

from events.deliver.batching import Batcher
from events.deliver.history import StoredFrame, frames_after

# Reads in one hop, at most: at most this many queries of at most 2 x REPLAY_BATCH_SIZE rows.
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Read:
    """Up to ``limit`` stored messages of a channel after ``after``, for one stream."""

    channel_id: int
    slug: str
    after: int
    limit: int


def read_all(reads: list[Read]) -> list[list[StoredFrame] | Exception]:
    """Each read's frames, in order (in the database thread); one query per run of close positions."""
    by_channel: dict[tuple[int, str, int], list[int]] = defaultdict(list)
    for index, read in enumerate(reads):
        by_channel[(read.channel_id, read.slug, read.limit)].append(index)
    answers: list[list[StoredFrame] | Exception] = [[] for _ in reads]
    for (channel_id, slug, limit), indexes in by_channel.items():
        indexes.sort(key=lambda index: reads[index].after)
        start = 0
        while start < len(indexes):
            lowest = reads[indexes[start]].after
            end = start + 1
            while end < len(indexes) and reads[indexes[end]].after - lowest <= limit:
                end += 1
            run = indexes[start:end]
            spread = reads[run[-1]].after - lowest
            try:
                # Sequences are distinct whole numbers: at most ``spread`` rows lie between the
                # lowest position and any other in the run, so each read finds its ``limit`` rows
                # within ``spread + limit`` (or the query ended short: then it has all there are).
                stored = frames_after(channel_id, slug, lowest, spread + limit)
            except Exception as error:  # this run's answer; other channels' reads go on
                for index in run:
                    answers[index] = error
            else:
                sequences = [frame.sequence for frame in stored]
                for index in run:
                    first = bisect_right(sequences, reads[index].after)
                    answers[index] = stored[first : first + limit]
            start = end
    return answers


_batcher: Batcher[Read, list[StoredFrame]] = Batcher(read_all, max_size=MAX_BATCH)


async def frames_after_batched(channel_id: int, slug: str, after: int, limit: int) -> list[StoredFrame]:
    """``history.frames_after`` for one stream, read in the next batch."""
    return await _batcher(Read(channel_id, slug, after, limit))
