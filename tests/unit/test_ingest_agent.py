"""A batch in flight finishes before a stopping worker lets Faust acknowledge its records."""

from __future__ import annotations

import asyncio

import pytest

from agents.ingest import _to_the_end


async def test_a_cancelled_agent_lets_its_batch_finish_first() -> None:
    stored: list[str] = []
    started = asyncio.Event()

    async def batch() -> None:
        started.set()
        await asyncio.sleep(0.05)  # the commit to the store, in flight
        stored.append("committed")

    agent = asyncio.create_task(_to_the_end(batch()))
    await started.wait()
    agent.cancel()  # Faust stopping the worker
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert stored == ["committed"]  # only now may take_events acknowledge the records
