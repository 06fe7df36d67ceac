"""Reading a group's offsets waits out a group coordinator that is still loading."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from app.worker import internal_state


def failing(codes: list[int], result: str = "offsets"):  # noqa: ANN201
    """A call that fails with each of ``codes`` in turn, then returns ``result``."""
    left = list(codes)

    def call() -> str:
        if left:
            raise KafkaException(KafkaError(left.pop(0)))
        return result

    return call


def test_a_loading_coordinator_is_waited_for(monkeypatch) -> None:
    naps: list[float] = []
    monkeypatch.setattr(internal_state.time, "sleep", naps.append)
    codes = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
    assert internal_state._retrying(failing(codes)) == "offsets"
    assert naps == [0.5, 1.0]


def test_other_errors_and_a_coordinator_that_never_comes_are_raised(monkeypatch) -> None:
    monkeypatch.setattr(internal_state.time, "sleep", lambda _s: None)
    with pytest.raises(KafkaException, match="GROUP_AUTHORIZATION_FAILED"):
        internal_state._retrying(failing([KafkaError.GROUP_AUTHORIZATION_FAILED]))
    with pytest.raises(KafkaException, match="NOT_COORDINATOR"):
        internal_state._retrying(failing([KafkaError.NOT_COORDINATOR] * 3), attempts=3)
