"""Which input record each event of a step is about: UVAP keys its events by that record.

UVAP writes an FVClusterUpdateRecord with "key: Key of the current input record". The engine
names, in each event an observation caused (its registration, its realization, a deletion by
the REMOVE action at that realization), the detection key of that observation. Everything else
runs on event time, and no one record caused it (realization by time, expiry, merge passes,
operator requests): no key. UVAP runs those at the next input and keys them with it; fvc runs
them when the watermark passes their deadline (docs/time.md), whichever record moved it, so
that a replay gives the same events (docs/uvap.md).
"""

from __future__ import annotations

from app.engine import StepResult

NO_KEY = b""  # published as a null key


def input_keys(result: StepResult) -> list[bytes]:
    """The key of the input record behind each event of ``result`` (``NO_KEY`` when none)."""
    return [event.input_key.encode() for event in result.events]
