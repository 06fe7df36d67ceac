"""Every failure mode fvc reports, under one root so callers can catch them together.

Each docstring says what an operator should do about it.
"""

from __future__ import annotations


class FvcError(Exception):
    """Root of fvc's own errors."""


class ConfigError(FvcError):
    """A configuration value breaks a rule: fix the named field and reload.

    Carries every problem found, each with its JSON path, value and rule.
    """

    def __init__(self, problems: list[tuple[str, object, str]]) -> None:
        self.problems = problems
        lines = [f"{path}: {value!r} {rule}" for path, value, rule in problems]
        message = "invalid configuration:\n  " + "\n  ".join(lines)
        super().__init__(message)


class DecodeError(FvcError):
    """An input record cannot be used: it goes to the dead-letter topic with this reason.

    ``reason`` is machine-readable (``not_json``, ``missing_field``, ...), ``detail`` readable,
    ``raw`` the original bytes.
    """

    def __init__(self, reason: str, detail: str, raw: bytes = b"") -> None:
        self.reason = reason
        self.detail = detail
        self.raw = raw
        message = f"{reason}: {detail}"
        super().__init__(message)


class SkippedRecord(DecodeError):
    """An input record that holds nothing to cluster, skipped as UVAP skips it: not a dead letter.

    The worker counts it in ``fvc_skipped_records_total{reason}`` and applies its offset like any
    other record's; ``FVC_STRICT_INPUT=true`` makes such records dead letters instead. A
    DecodeError, so callers that do not tell the two apart still treat the record as unusable.
    """


class StoreUnavailable(FvcError):
    """The state store cannot be reached: the worker retries with backoff; check Redis."""


class VersionConflict(FvcError):
    """Another worker changed a cluster first: reload the named clusters and redo the batch."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        message = f"version conflict on {len(keys)} cluster(s): {', '.join(keys[:5])}"
        super().__init__(message)


class LocalStackError(FvcError):
    """The local Kafka or Redis could not be started or stopped; the message says why."""


class StoreLost(FvcError):
    """The store's generation marker is gone or changed: the state is rebuilt, not added to.

    Redis restarted empty, was flushed or failed over to an empty replica.
    """


class AlreadyApplied(FvcError):
    """A commit's input offsets were stored before: the batch is a replay and changes nothing."""


class ClockMoved(FvcError):
    """Another worker moved the merge schedule first: its pass stands, this one is dropped."""

    def __init__(self, held: int | None) -> None:
        super().__init__(f"the merge schedule is at {held} already")
        self.held = held


class ConfigChanged(FvcError):
    """The deployment's config moved on (a reload): recompute under the stored version."""

    def __init__(self, held: int) -> None:
        super().__init__(f"the stored config is at version {held}")
        self.held = held


class UnknownCluster(FvcError):
    """No cluster has that id: list them with ``fvc clusters list``."""


class UnknownStream(FvcError):
    """An observation names a stream the configuration does not have: add it to the config."""


class MergeRefused(FvcError):
    """Those clusters cannot be merged (one id twice, or a method that keeps no members)."""


class RestoreIncomplete(FvcError):
    """The internal-state topic could not be read to its end: nothing is restored, nothing runs.

    A partial restore would silently lose the clusters of the unread offsets, so the store is
    left empty and the worker exits; its restart tries again. Check the broker, or raise
    ``FVC_BROKER_OUTAGE_S`` (how long the read may go without progress).

    ``unfinished`` maps each partition not read to its end to ``(position, end)``; it is empty
    when the failure came before any partition was known.
    """

    def __init__(
        self, topic: str, reason: str, unfinished: dict[int, tuple[int, int]], records: int
    ) -> None:
        self.topic = topic
        self.reason = reason
        self.unfinished = unfinished
        self.records = records
        where = ", ".join(f"{p} at {pos}/{end}" for p, (pos, end) in sorted(unfinished.items()))
        progress = f"partitions short of their end (position/end): {where}" if where else (
            "no partition was read")
        message = (
            f"could not read internal-state topic {topic!r} to its end ({reason}); "
            f"{records} records read, {progress}; nothing was restored"
        )
        super().__init__(message)
