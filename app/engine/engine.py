"""The online clustering engine: assigns batches of observations to clusters.

A batch is searched against the index with one matrix product, then decided as a whole
(``plan.py``): every observation's choice is checked against the states the batch's earlier
choices give the clusters they touch, so a batch gives exactly the result of one-by-one
processing. Where a choice depends on more than that (track links, the REMOVE action) or the
plan needs too many corrections, observations are resolved in order instead, each against the
best untouched cluster from the search and the few clusters this batch already created or
changed (kept in a small scratch matrix). Either way the clusters and events are then made one
observation after another, with the same rules.

``process`` computes a ``StepResult`` without changing the clusters; ``apply`` makes it current.
(``process`` only notes how costly its plan was, which decides how the next batches are
decided, never what.)
Between the two a worker stores the result atomically, and can throw it away on a conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np

from app.engine import maintenance, plan, repair, rules, tracks, window
from app.engine.columns import FIELD, ClusterColumns, Snapshot
from app.engine.deadlines import Deadlines
from app.engine.lifecycle import REMOVE, Lifecycle, reg_event
from app.engine.scratch import BatchScratch
from app.engine.types import Cluster, ClusterId, Decision, Lifespan, Observation, StepResult
from app.errors import UnknownStream

if TYPE_CHECKING:
    from app.config import ClusteringConfig, ImprovedModeConfig, StreamConfig
    from app.index.base import VectorIndex


# A plan that needs more rounds than this costs more than deciding one at a time (measured on
# batches of 512 at d = 512, docs/benchmarks.md section 9); the next batches are then decided
# one at a time before planning is tried again.
PLAN_ROUNDS_WORTH = 2
UNPLANNED_BATCHES = 8
MAX_UNPLANNED_BATCHES = 512


def _text(value: object) -> str:
    return str(getattr(value, "value", value))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What ``apply`` of one result is about to change, as it was: enough to take it back.

    ``clusters`` holds the rows of the touched clusters as they were, and which did not exist;
    ``dirty`` whether each was a merge candidate (None: every cluster was one).
    """

    clusters: Snapshot
    dirty: dict[str, bool] | None
    watermark: int


class Engine:
    """Cluster state (a replica of the store's) plus the rules that change it.

    >>> from app.config import ClusteringConfig
    >>> engine = Engine(ClusteringConfig.for_threshold(0.9, ["cam"]))
    >>> obs = [Observation(np.array(v, dtype=np.float32), "cam", f"k{i}", i)
    ...        for i, v in enumerate([[1, 0], [0.99, 0.1], [0, 1]])]
    >>> [d.created for d in engine.step(obs).decisions]
    [True, False, True]
    """

    def __init__(
        self,
        config: ClusteringConfig,
        index: VectorIndex | None = None,
        *,
        search_k: int = 8,
        merge_k: int = 10,
        planned: bool = True,
    ) -> None:
        if index is None:
            from app.index.numpy_index import NumpyIndex

            index = NumpyIndex()
        self.index = index
        self.search_k = search_k
        self.merge_k = merge_k
        self.planned = planned  # False: every batch decided one observation at a time
        self._unplanned = 0  # batches left to decide one at a time before planning again
        self._pause = UNPLANNED_BATCHES  # how many after the next costly plan
        self.clusters = ClusterColumns(index)
        self.watermark = 0
        self.expiries = Deadlines()
        self.realizations = Deadlines()
        self.merge_dirty: dict[str, None] | None = None  # None: every cluster is a candidate
        self.track_members: dict[str, set[str]] = {}  # stream/track -> clusters naming it
        self._mortal = 0  # clusters held with a retention period: they can expire
        self.reconfigure(config)

    def reconfigure(self, config: ClusteringConfig) -> None:
        """Follow a new config from now on; clusters stay as they are."""
        self.config = config
        self.method = _text(config.method)
        self.alpha = float(config.ema_alpha)
        self.lifecycle = Lifecycle(config)
        self._streams = {s.stream_id: s for s in config.streams}
        # Whether a cluster this config makes can stop being joinable (retention, REMOVE)
        self._makes_mortal = self.lifecycle.action == REMOVE or any(
            s.retention_ms > 0 for s in config.streams
        )
        # The improved mode (app/engine/repair.py), or None: the plain rules of DESIGN.md 4.
        self.improved = config.improved_mode
        self.deferral_ms = config.deferral_ms
        self.max_window_size = config.max_window_size

    @property
    def dimension(self) -> int:
        """Vector dimension of the clusters held (0 while there are none)."""
        return int(self.index.vectors.shape[1]) if len(self.clusters) else 0

    # -- observations -------------------------------------------------------------------------

    def process(self, observations: Sequence[Observation]) -> StepResult:
        """Decide a batch; the clusters are unchanged until ``apply``."""
        if not observations:
            return StepResult(watermark=self.watermark)
        if self.deferral_ms:
            return self._process_windows(observations)
        units = self._units(observations)
        sims, slots = self._search(units)
        found = self._plan(observations, units, sims, slots)
        decided = 0 if found is None else found.decided
        scratch = BatchScratch(units, searched=decided < len(observations))
        watermark = max(self.watermark, max(o.time for o in observations))
        decisions = [] if found is None else self._follow(found, observations, units, scratch)
        sim_rows, slot_rows = sims[decided:].tolist(), slots[decided:].tolist()
        for i in range(decided, len(observations)):
            obs = observations[i]
            j = i - decided
            key, sim = self._best(i, units[i], sim_rows[j], slot_rows[j], scratch, obs.time)
            stream = self._stream(obs.stream_id)
            threshold = stream.reg_threshold
            track = ""
            if obs.track and stream.track_linking is not None:
                track = f"{obs.stream_id}/{obs.track}"
                linked = tracks.linked(self, stream, track, obs.time, units[i], key, sim, scratch)
                if linked is not None:
                    key, sim = linked
                    self._update(key, obs, units[i], scratch, track)
                    decisions.append(Decision(key, sim, False))
                    continue
            if (
                key is not None
                and threshold < 1.0
                and self._joins(key, sim, threshold, obs, scratch)
            ):
                self._update(key, obs, units[i], scratch, track)
                decisions.append(Decision(key, sim, False))
            else:
                key = self._create(obs, units[i], scratch, track)
                decisions.append(Decision(key, sim, True))
        return scratch.result(tuple(decisions), watermark)

    def _process_windows(self, observations: Sequence[Observation]) -> StepResult:
        """Deferred decisions (app/engine/window.py): each window's groups decided as one.

        A group goes to the cluster its sum is most similar to (by representative, as the
        index ranks them) and joins it when the mean similarity between their members reaches
        the improved mode's bar for a group of its size; else its first observation starts a
        cluster. Its observations then join in order, each with its own version and event.
        """
        mode = cast("ImprovedModeConfig", self.improved)
        units = self._units(observations)
        members = window.batch_groups(
            units,
            [o.time for o in observations],
            [self._stream(o.stream_id).reg_threshold for o in observations],
            self.deferral_ms,
            self.max_window_size,
            mode.window_threshold,
        )
        counts = np.array([o.count for o in observations], dtype=np.float32)[:, None]
        sums = np.stack([(units[rows] * counts[rows]).sum(axis=0) for rows in members])
        norms = np.linalg.norm(sums, axis=1)
        group_units = sums / norms[:, None]
        sims, slots = self._search(group_units)
        scratch = BatchScratch(group_units)
        nearest = slots[:, 0]
        scratch.read(self.clusters.at(np.unique(nearest[nearest >= 0])))  # one gather, not many
        decisions: list[Decision | None] = [None] * len(observations)
        for g, rows in enumerate(members):
            first = observations[rows[0]]
            key, sim = self._best(g, group_units[g], sims[g].tolist(), slots[g].tolist(),
                                  scratch, first.time)
            threshold = self._stream(first.stream_id).reg_threshold
            count = int(sum(counts[rows, 0]))
            scaled = sim * float(norms[g]) / count  # S_g . S_c / (n_g n_c) = scaled |S_c| / n_c
            joined = key is not None and threshold < 1.0 and repair.joins(
                self, mode, key, scaled, threshold, count, scratch
            )
            if not joined:
                key = self._create(first, units[rows[0]], scratch, "")
                decisions[rows[0]] = Decision(key, sim, True)
                rows = rows[1:]
            for r in rows:
                self._update(cast(str, key), observations[r], units[r], scratch, "")
                decisions[r] = Decision(cast(str, key), sim, False)
        watermark = max(self.watermark, max(o.time for o in observations))
        return scratch.result(tuple(cast(list[Decision], decisions)), watermark)

    def _plan(
        self,
        observations: Sequence[Observation],
        units: np.ndarray,
        sims: np.ndarray,
        slots: np.ndarray,
    ) -> plan.Plan | None:
        """The batch decided with array operations (app/engine/plan.py), when its rules allow.

        Track links and the REMOVE action depend on more than similarities, sizes, times and
        retention: batches under them are decided one at a time. So are the next
        ``UNPLANNED_BATCHES`` after a plan that took more than ``PLAN_ROUNDS_WORTH`` rounds,
        compared every observation with every version (the batch created many clusters) or
        left the end of its batch to be decided one at a time, twice as many after each such
        plan in a row (up to ``MAX_UNPLANNED_BATCHES``): a round costs about half of what
        deciding one at a time does, and a stream whose batches hold the same people several
        times (consecutive frames) needs many.
        """
        if not self.planned or self.lifecycle.action == REMOVE or len(observations) < 2:
            return None
        if self._unplanned > 0:  # only how the next batches are decided: the result is the same
            self._unplanned -= 1
            return None
        streams = [self._stream(o.stream_id) for o in observations]
        pairs = zip(observations, streams, strict=True)
        if any(o.track and s.track_linking is not None for o, s in pairs):
            return None
        times = np.array([o.time for o in observations], dtype=np.int64)
        clusters, index = self.clusters, self.index

        def known(slots: np.ndarray) -> plan.Known:
            ints, norms = clusters.gather(slots)
            return plan.Known(
                units=index.vectors[slots],
                norms=norms,
                last_time=ints[:, FIELD["last_time"]],
                retention_ms=ints[:, FIELD["retention_ms"]],
                num_observations=ints[:, FIELD["num_observations"]],
            )

        def alive(slot: int, time: int) -> bool:
            return self.alive_at(clusters.row(index.key_at(slot)), time)

        def exhaustive(row: int, excluded: set[int]) -> tuple[int, float]:
            return self._best_untouched(units[row], excluded, int(times[row]))

        batch = plan.Batch(
            units=units,
            sims=sims,
            slots=slots,
            times=times,
            counts=np.array([o.count for o in observations], dtype=np.int64),
            thresholds=np.array(
                [s.reg_threshold if s.reg_threshold < 1.0 else np.inf for s in streams]
            ),
            retentions=np.array([s.retention_ms for s in streams], dtype=np.int64),
            size=len(index),
            method=self.method,
            alpha=self.alpha,
            known=known,
            alive=alive if self._mortal else None,
            exhaustive=exhaustive,
            size_discount=None if self.improved is None else self.improved.size_discount,
            table=index.vectors if index.exact_top_k else None,
        )
        found = plan.decide(batch)
        costly = found.rounds > PLAN_ROUNDS_WORTH or found.dense
        if costly or found.decided < len(observations):
            self._unplanned = self._pause
            self._pause = min(2 * self._pause, MAX_UNPLANNED_BATCHES)
        else:
            self._pause = UNPLANNED_BATCHES
        return found

    def _follow(
        self,
        found: plan.Plan,
        observations: Sequence[Observation],
        units: np.ndarray,
        scratch: BatchScratch,
    ) -> list[Decision]:
        """Make the planned choices: the clusters and events, one observation after another."""
        decisions = []
        size = len(self.index)
        created: dict[int, str] = {}
        targets = np.array(found.targets[: found.decided], dtype=np.int64)
        scratch.read(self.clusters.at(np.unique(targets[targets < size])))
        for i in range(found.decided):
            obs, target, sim = observations[i], found.targets[i], found.sims[i]
            if target == size + i:
                key = created[i] = self._create(obs, units[i], scratch, "")
                decisions.append(Decision(key, sim, True))
                continue
            key = self.index.key_at(target) if target < size else created[target - size]
            self._update(key, obs, units[i], scratch, "", found.state(i))
            decisions.append(Decision(key, sim, False))
        return decisions

    def apply(self, result: StepResult) -> None:
        """Make a stored result current: clusters, index, due times, merge candidates."""
        self._put(result.upserts)
        self._drop(result.deletions)
        self.watermark = max(self.watermark, result.watermark)
        if self.merge_dirty is None and result.swept:  # the first merge pass: all were swept
            self.merge_dirty = {}
        if self.merge_dirty is not None:
            for key in result.swept:
                self.merge_dirty.pop(key, None)
            self.merge_dirty.update(dict.fromkeys(c.key for c in result.upserts))

    def checkpoint(self, result: StepResult) -> Checkpoint:
        """What ``apply(result)`` would change, as it is now, for ``restore``.

        A worker applies a result before the store confirms it, to decide the next batch
        meanwhile; a refused commit is then taken back with ``restore``.
        """
        keys = dict.fromkeys(result.expected)
        keys.update(dict.fromkeys(c.key for c in result.upserts))
        keys.update(dict.fromkeys(result.deletions))
        keys.update(dict.fromkeys(result.swept))
        dirty = self.merge_dirty
        return Checkpoint(
            clusters=self.clusters.snapshot(list(keys)),
            dirty=None if dirty is None else {key: key in dirty for key in keys},
            watermark=self.watermark,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take back the result applied since ``checkpoint`` was taken."""
        held = checkpoint.clusters
        self._drop([key for key in held.absent if key in self.clusters])
        self._put(self.clusters.restore(held))
        if checkpoint.dirty is None:
            self.merge_dirty = None  # no merge pass had been applied
        elif self.merge_dirty is not None:
            for key, was in checkpoint.dirty.items():
                if was:
                    self.merge_dirty[key] = None
                else:
                    self.merge_dirty.pop(key, None)
        self.watermark = checkpoint.watermark

    def step(self, observations: Sequence[Observation]) -> StepResult:
        """Process and apply at once (offline use)."""
        result = self.process(observations)
        self.apply(result)
        return result

    @contextmanager
    def loading(self, expected: int = 0) -> Iterator[None]:
        """About ``expected`` clusters are coming (a bootstrap): room is made for them at once.

        With an eighth more for the clusters made after it: growing a full table copies it
        (2 GB at 1M clusters, d = 512), and room not yet written costs no resident memory.
        """
        room = expected + expected // 8
        self.clusters.reserve(room)
        with self.index.loading(room):
            yield

    def load(
        self, clusters: Iterable[Cluster], deletions: Iterable[str] = (), *, force: bool = False
    ) -> None:
        """Take clusters changed elsewhere (store bootstrap, change stream, conflict reload).

        Older versions than the ones held are ignored unless ``force`` (the store's word after a
        conflict). The watermark follows the newest observation loaded.
        """
        newer = [c for c in clusters if force or (self.version_of(c.key) or 0) < c.version]
        self._put(newer)
        if newer:
            self.watermark = max(self.watermark, max(c.last_time for c in newer))
        self._drop(list(deletions))
        if self.merge_dirty is not None:
            self.merge_dirty.update(dict.fromkeys(c.key for c in newer))

    # -- timers and operator requests ---------------------------------------------------------

    def advance(self, watermark: int) -> StepResult:
        """Realize clusters whose time limit passed by ``watermark``; expire those past retention.

        Each event is stamped with the event time it is due at, not ``watermark``: the same
        change made when an observation touches the cluster first (``_caught_up``), so when a
        timer runs does not change what it emits.
        """
        return maintenance.advance(self, watermark)

    def merge(self, time: int | None = None) -> StepResult:
        """One merge pass at event time ``time`` (the watermark) over the changed candidates."""
        return maintenance.merge_pass(self, self.watermark if time is None else time)

    def alive_at(self, cluster: Lifespan, time: int) -> bool:
        """Whether an observation at ``time`` may join ``cluster`` (DESIGN.md section 4).

        Not when its retention ran out before ``time`` (expired once strictly older), nor when
        the REMOVE action took it out at its realization deadline: both hold whether or not the
        timer that deletes it has run yet.
        """
        return not self.expired_by(cluster, time) and not self.lifecycle.removed_by(cluster, time)

    @staticmethod
    def expired_by(cluster: Lifespan, time: int) -> bool:
        """Whether ``cluster``'s retention ran out before event time ``time``."""
        retention = cluster.retention_ms
        return retention > 0 and cluster.last_time + retention < time

    def remove(self, key: str, time: int | None = None) -> StepResult:
        """Delete a cluster on request (DELETE_EVENT, reason REMOVED)."""
        return maintenance.remove(self, key, self.watermark if time is None else time)

    # -- internals ----------------------------------------------------------------------------

    def _stream(self, stream_id: str) -> StreamConfig:
        try:
            return self._streams[stream_id]
        except KeyError:
            message = f"stream {stream_id!r} is not in the configuration's input_stream_configs"
            raise UnknownStream(message) from None

    def version_of(self, key: str) -> int | None:
        """The version of cluster ``key``, or None when it is gone.

        The deadline queues compare it with their entries' to skip those that went stale.
        """
        return self.clusters.version_of(key)

    @staticmethod
    def _units(observations: Sequence[Observation]) -> np.ndarray:
        vectors = np.stack([o.vector for o in observations]).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(norms > 0):
            message = "an observation has a zero vector; the codec should have refused it"
            raise ValueError(message)
        return cast(np.ndarray, vectors / norms)  # numpy types norm(..., axis=...) as Any

    def _search(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self.index) == 0:
            empty = np.full((len(units), 1), -1, dtype=np.int64)
            return np.full((len(units), 1), -np.inf, dtype=np.float32), empty
        return self.index.search(units, min(self.search_k, len(self.index)))

    def _joins(
        self, key: str, sim: float, threshold: float, obs: Observation, scratch: BatchScratch
    ) -> bool:
        """Whether ``obs`` joins its best cluster ``key``: the plain test unless improved."""
        if self.improved is None:
            return sim >= threshold
        return repair.joins(self, self.improved, key, sim, threshold, obs.count, scratch)

    def _best(
        self,
        position: int,
        unit: np.ndarray,
        sims: list[float],
        slots: list[int],
        scratch: BatchScratch,
        time: int,
    ) -> tuple[str | None, float]:
        """Best cluster alive at ``time``: untouched from the batch search, touched from scratch."""
        best_key, best_sim = None, -np.inf
        clusters = self.clusters
        # Without retention or REMOVE every cluster is alive: no row is read to ask
        ask = self._mortal > 0 or self.lifecycle.action == REMOVE
        for sim, slot in zip(sims, slots, strict=True):
            if slot < 0:
                break
            key = self.index.key_at(slot)
            if key not in scratch.touched and (
                not ask or self.alive_at(clusters.row(key), time)
            ):
                best_key, best_sim = key, sim
                break
        else:
            if len(self.index) > len(slots):
                index = self.index
                touched = {index.slot_of(k) for k in scratch.touched if k in index}
                slot, best_sim = self._best_untouched(unit, touched, time)
                best_key = None if slot < 0 else index.key_at(slot)
        usable = partial(self.alive_at, time=time) if ask or self._makes_mortal else None
        touched_key, touched_sim = scratch.best(position, usable)
        if touched_key is not None and touched_sim > best_sim:
            return touched_key, touched_sim
        return best_key, best_sim

    def _best_untouched(
        self, unit: np.ndarray, excluded: set[int], time: int
    ) -> tuple[int, float]:
        """Rare fallback when no top-k hit was usable: one exact pass over all vectors.

        Returns the best slot alive at ``time`` outside ``excluded`` and its similarity
        (-1 and -inf when there is none).
        """
        sims = self.index.vectors @ unit
        for slot in excluded:
            sims[slot] = -np.inf
        for slot in np.argsort(-sims, kind="stable").tolist():
            if not np.isfinite(sims[slot]):
                break
            if self.alive_at(self.clusters.row(self.index.key_at(slot)), time):
                return slot, float(sims[slot])
        return -1, -np.inf

    def _update(
        self,
        key: str,
        obs: Observation,
        unit: np.ndarray,
        scratch: BatchScratch,
        track: str,
        state: tuple[np.ndarray, float] | None = None,
    ) -> None:
        """``obs`` joins cluster ``key`` (``state``: its unit and norm after that, when known)."""
        # The hot path: one Cluster built directly (dataclasses.replace costs twice as much),
        # with the emission decided beforehand so no second copy is needed for it.
        cluster = scratch.current(key, self.clusters)
        time = obs.time
        if not cluster.realized and cluster.pending > 0:
            cluster = self._caught_up(cluster, time, scratch)
        life = self.lifecycle
        realized = cluster.realized
        pending = cluster.pending + obs.count
        pending_since = time if cluster.pending == 0 else cluster.pending_since
        due = life.due_at(realized, pending, pending_since, time)
        emit = not due and life.emits(realized, cluster.last_emit_time, time)
        streams = cluster.streams
        retention = cluster.retention_ms
        if obs.stream_id not in streams:
            streams = tuple(sorted((*streams, obs.stream_id)))
        if retention:  # the stream is known: the search for this observation looked it up
            stream_retention = self._streams[obs.stream_id].retention_ms
            retention = rules.combined_retention(retention, stream_retention)
        if state is None:
            state = rules.updated(
                self.method, cluster.unit, cluster.norm, unit, obs.count, self.alpha
            )
        changed = Cluster(
            id=cluster.id,
            unit=state[0],
            norm=state[1],
            num_observations=cluster.num_observations + obs.count,
            realized=realized,
            first_time=cluster.first_time,
            last_time=time if time > cluster.last_time else cluster.last_time,
            streams=streams,
            retention_ms=retention,
            version=cluster.version + 1,
            pending=pending,
            pending_since=pending_since,
            last_emit_time=time if emit else cluster.last_emit_time,
            emitted=cluster.emitted or emit,
            model_id=cluster.model_id,
            type=cluster.type,
            track=track or cluster.track,
            track_time=time if track else cluster.track_time,
        )
        if track:
            tracks.claim(scratch, track, key)
        if due:
            kept = life.realize(changed, time, obs.stream_id, scratch.events, obs.key)
            scratch.record(key, kept)
            return
        if emit:
            scratch.events.append(reg_event(changed, time, obs.stream_id, obs.key))
        scratch.record(key, changed)

    def _caught_up(self, cluster: Cluster, time: int, scratch: BatchScratch) -> Cluster:
        """``cluster`` after its realization by time, when that fell due before ``time``.

        Exactly the change ``advance`` makes (a version of its own, the event stamped with the
        deadline), so the result is the same whether the timer or this observation came first.
        A cluster the REMOVE action took out never gets here: it is not alive at ``time``.
        """
        deadline = self.lifecycle.deadline(cluster)
        if deadline is None or deadline > time:
            return cluster
        bumped = replace(cluster, version=cluster.version + 1)
        stream = cluster.id.first_detection_stream_id
        realized = self.lifecycle.realize(bumped, deadline, stream, scratch.events)
        if realized is None:  # pragma: no cover - alive_at keeps removed clusters out
            message = f"cluster {cluster.key} was removed at {deadline}, before {time}"
            raise AssertionError(message)
        return realized

    def _create(
        self,
        obs: Observation,
        unit: np.ndarray,
        scratch: BatchScratch,
        track: str,
    ) -> str:
        cluster_id = self._free_id(obs, scratch)
        first_unit, norm = rules.initial(self.method, unit, obs.count)
        cluster = Cluster(
            id=cluster_id,
            unit=first_unit,
            norm=norm,
            num_observations=obs.count,
            realized=False,
            first_time=obs.time,
            last_time=obs.time,
            streams=(obs.stream_id,),
            retention_ms=self._stream(obs.stream_id).retention_ms,
            version=1,
            pending=obs.count,
            pending_since=obs.time,
            model_id=obs.model_id,
            type=obs.type,
            track=track,
            track_time=obs.time if track else -1,
        )
        if track:
            tracks.claim(scratch, track, cluster.key)
        scratch.expected[cluster.key] = 0
        settled = self.lifecycle.settle(
            cluster, obs.time, obs.time, obs.stream_id, scratch.events, obs.key
        )
        scratch.record(cluster.key, settled)
        return cluster.key

    def _free_id(self, obs: Observation, scratch: BatchScratch) -> ClusterId:
        """The new cluster's id; a repeated detection key gets a ``~n`` suffix to stay unique."""
        cluster_id = ClusterId(obs.time, obs.key, obs.stream_id)
        n = 1
        while cluster_id.key in self.clusters or cluster_id.key in scratch.touched:
            n += 1
            cluster_id = ClusterId(obs.time, f"{obs.key}~{n}", obs.stream_id)
        return cluster_id

    def _put(self, clusters: Sequence[Cluster]) -> None:
        if not clusters:
            return
        held = self.clusters
        keys = [c.key for c in clusters]
        old_tracks = [held.track_of(key) for key in keys]
        if self._mortal:  # else none of them is held with a retention period
            self._mortal -= held.mortals(keys)
        self.index.upsert(keys, np.stack([c.unit for c in clusters]))
        held.put(clusters)  # into the rows of the slots the index gave them
        for cluster, old_track in zip(clusters, old_tracks, strict=True):
            if cluster.track or old_track:
                tracks.remember(self.track_members, cluster.key, old_track, cluster.track)
            self._mortal += cluster.retention_ms > 0
            self._schedule(cluster)

    def _drop(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        held = self.clusters
        for key in dict.fromkeys(keys):
            self._mortal -= held.mortal(key)
            track = held.track_of(key)
            if track:
                tracks.remember(self.track_members, key, track, "")
            held.forget(key)
            if self.merge_dirty is not None:
                self.merge_dirty.pop(key, None)
        held.moved(self.index.remove(keys))

    def _schedule(self, cluster: Cluster) -> None:
        if cluster.retention_ms > 0:
            expiry = cluster.last_time + cluster.retention_ms + 1  # expired once strictly older
            self.expiries.push(expiry, cluster.key, cluster.version)
        limit = self.lifecycle.time_limit_ms
        if limit > 0 and not cluster.realized and cluster.pending > 0:
            self.realizations.push(cluster.pending_since + limit, cluster.key, cluster.version)
