"""events/runtime/lifespan.py: what start-up does to the process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from events.runtime.lifespan import YOUNG_GENERATION_THRESHOLD, settle_heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_takes_its_heap_out_of_the_collectors_scans() -> None:
    _, older, oldest = gc.get_threshold()
    gc.unfreeze()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, older, oldest)
    # Objects made afterwards are still collected.
    assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()
