"""The clustering engine: pure, batch-oriented, with time passed in (never read from a clock)."""

from app.engine.engine import Engine
from app.engine.types import (
    Cluster,
    ClusterId,
    Decision,
    DeleteReason,
    Event,
    EventType,
    Observation,
    StepResult,
)

__all__ = [
    "Cluster",
    "ClusterId",
    "Decision",
    "Engine",
    "DeleteReason",
    "Event",
    "EventType",
    "Observation",
    "StepResult",
]
