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

Each read's answer is a :class:`Slice` of its query's rows. A single-channel
stream writes its whole slice as one bytes object (``Slice.joined``: the ``id:``
lines and the fields, joined once per distinct slice and shared by every stream
resuming from the same position, issue 16) when it fits under the stream's
low-water mark; joined slices are kept only while the batch's answers are
referenced, at most one per read, each under that mark.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

from events import metrics
from events.deliver.batching import Batcher
from events.deliver.history import StoredFrame, frames_after
from events.wire import cursors

# Reads in one hop, at most: at most this many queries of at most 2 x REPLAY_BATCH_SIZE rows.
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Read:
    """Up to ``limit`` stored messages of a channel after ``after``, for one stream."""

    channel_id: int
    slug: str
    after: int
    limit: int


class Run:
    """One query's rows, shared by the reads it serves, and the frame bytes of each slice joined once."""

    __slots__ = ("_delivered", "_joined", "_sizes", "channel_id", "stored")

    def __init__(self, channel_id: int, stored: list[StoredFrame]) -> None:
        self.channel_id = channel_id
        self.stored = stored
        # (first, end) -> streams written that slice whole, not yet added to the metrics.
        self._delivered: dict[tuple[int, int], int] = {}
        # _sizes[i]: bytes of the first i frames, without their id suffixes (made on first use).
        self._sizes: list[int] | None = None
        self._joined: dict[tuple[int, int, str], bytes] = {}

    def size(self, first: int, end: int, suffix: int) -> int:
        """Bytes of frames ``first:end`` as a single-channel stream writes them, ``suffix`` after each number."""
        sizes = self._sizes
        if sizes is None:
            sizes = [0]
            total = 0
            for frame in self.stored:
                # "id: " + the number + the fields.
                total += 4 + len(str(frame.sequence)) + len(frame.fields)
                sizes.append(total)
            self._sizes = sizes
        return sizes[end] - sizes[first] + (end - first) * suffix

    def joined(self, first: int, end: int, epoch: str) -> bytes:
        key = (first, end, epoch)
        data = self._joined.get(key)
        if data is None:
            suffix = cursors.id_suffix(epoch)
            data = b"".join([b"id: %d%b%b" % (f.sequence, suffix, f.fields) for f in self.stored[first:end]])
            self._joined[key] = data
        return data

    def delivered(self, first: int, end: int) -> None:
        """One more stream was written frames ``first:end``: counted per message once per loop turn."""
        if not self._delivered:
            # After the other answers of this batch, whose callbacks are already due.
            asyncio.get_running_loop().call_soon(self._count)
        key = (first, end)
        self._delivered[key] = self._delivered.get(key, 0) + 1

    def _count(self) -> None:
        delivered, self._delivered = self._delivered, {}
        tally = metrics.replayed_deliveries
        for (first, end), streams in delivered.items():
            for frame in self.stored[first:end]:
                tally[(self.channel_id, frame.sequence)] += streams


class Slice:
    """One read's answer: frames ``first:end`` of a shared :class:`Run`, asked with ``limit``."""

    __slots__ = ("_run", "end", "first", "limit")

    def __init__(self, run: Run, first: int, end: int, limit: int) -> None:
        self._run, self.first, self.end, self.limit = run, first, end, limit

    def __len__(self) -> int:
        return self.end - self.first

    @property
    def frames(self) -> list[StoredFrame]:
        return self._run.stored[self.first : self.end]

    @property
    def ended_short(self) -> bool:
        """Fewer rows than asked for: there were no more when it was read."""
        return self.end - self.first < self.limit

    def gapless_after(self, position: int) -> bool:
        """True when the frames are exactly ``position + 1``, ``position + 2``, ... (none: True)."""
        if self.end == self.first:
            return True
        stored = self._run.stored
        first, last = stored[self.first].sequence, stored[self.end - 1].sequence
        return first == position + 1 and last - first == self.end - self.first - 1

    @property
    def last_sequence(self) -> int:
        return self._run.stored[self.end - 1].sequence

    def size(self, epoch: str) -> int:
        """``len(self.joined(epoch))``, without joining."""
        return self._run.size(self.first, self.end, len(cursors.id_suffix(epoch)))

    def joined(self, epoch: str) -> bytes:
        """The frames as a single-channel stream of ``epoch`` writes them, one bytes object.

        The same object for every slice of the run with the same bounds and epoch.
        """
        return self._run.joined(self.first, self.end, epoch)

    def delivered(self) -> None:
        """Count these frames as replayed to one more stream (``metrics.replayed_deliveries``)."""
        self._run.delivered(self.first, self.end)


def read_all(reads: list[Read]) -> list[Slice | Exception]:
    """Each read's frames, in order (in the database thread); one query per run of close positions."""
    by_channel: dict[tuple[int, str, int], list[int]] = defaultdict(list)
    for index, read in enumerate(reads):
        by_channel[(read.channel_id, read.slug, read.limit)].append(index)
    answers: list[Slice | Exception] = []
    answers.extend(Slice(Run(read.channel_id, []), 0, 0, read.limit) for read in reads)
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
                shared = Run(channel_id, stored)
                sequences = [frame.sequence for frame in stored]
                for index in run:
                    first = bisect_right(sequences, reads[index].after)
                    answers[index] = Slice(shared, first, min(first + limit, len(stored)), limit)
            start = end
    return answers


_batcher: Batcher[Read, Slice] = Batcher(read_all, max_size=MAX_BATCH)


def read_batched(channel_id: int, slug: str, after: int, limit: int) -> asyncio.Future[Slice]:
    """``history.frames_after`` for one stream, read in the next batch: its answer's future."""
    return _batcher.submit(Read(channel_id, slug, after, limit))


async def frames_after_batched(channel_id: int, slug: str, after: int, limit: int) -> list[StoredFrame]:
    """``history.frames_after`` for one stream, read in the next batch."""
    return (await _batcher(Read(channel_id, slug, after, limit))).frames
