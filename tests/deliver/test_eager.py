from __future__ import annotations

import asyncio

import pytest

from events.deliver.eager import start_eagerly


async def test_a_coroutine_that_does_not_wait_finishes_at_once() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    assert start_eagerly(write()) is None
    assert done == ["written"]


async def test_a_coroutine_that_waits_continues_in_a_task() -> None:
    gate = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def write() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    pending = start_eagerly(write())
    assert pending is not None
    assert steps == ["before"]
    gate.set_result("gate opened")
    await asyncio.wait_for(pending, 1)
    assert steps == ["before", "gate opened", "after"]


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def write() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append(True)

    pending = start_eagerly(write())
    assert pending is not None
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert cleaned == [True]


async def test_errors_before_and_after_the_first_wait_propagate() -> None:
    async def fails_at_once() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        start_eagerly(fails_at_once())

    gate = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await gate
        raise ConnectionResetError("gone later")

    pending = start_eagerly(fails_later())
    assert pending is not None
    gate.set_result(None)
    with pytest.raises(ConnectionResetError):
        await pending
