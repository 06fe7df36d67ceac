"""The whole pipeline on one machine: local Kafka and Redis, a worker, a synthetic scene.

Starts what is not running, runs one worker on demo topics of its own, sends a four-camera
scene with known identities, waits until every observation is clustered and every event is out,
then prints the realized clusters and the live run's quality against the ground truth, and
stops what it started.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from app.config import load_config
from app.dev.localrun import LocalRun, say
from app.downstream.tail import read_events
from app.downstream.view import ClusterView
from app.kafka_client import make_consumer
from app.offline.produce import detection_keys, produce_scene
from app.offline.quality import score_all
from app.offline.synth import Scene, make_scene


class Demo:
    """One demo run, with its own topics, consumer group and Redis namespace."""

    def __init__(self, workdir: Path, config_file: Path, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        config = load_config(config_file).to_dict()
        self.run = LocalRun("demo", workdir, config, assignments=True)
        self.settings, self.config = self.run.settings, self.run.config

    def execute(self) -> dict[str, float]:
        """Worker up, scene in, wait, report; the worker is stopped whatever happens."""
        streams = list(self.config.stream_ids)
        scene = make_scene(self.n, seed=self.seed, dim=128, cameras=len(streams),
                           start_ms=int(time.time() * 1000))
        with self.run.workers():
            say(f"sending {self.n} face vectors of {len(set(scene.y.tolist()))} people "
                f"from {len(streams)} cameras")
            report = produce_scene(self.settings, scene, config=self.config)
            say(f"sent in {report.seconds:.1f}s; waiting for the worker to cluster them")
            assignments = self._wait_for_assignments(report.records)
            events = read_events(self.settings, self.settings.output_topic, timeout=2.0)
        return self._report(scene, assignments, events)

    def _wait_for_assignments(self, expected: int, timeout: float = 120.0) -> dict[str, str]:
        consumer = make_consumer(self.settings, from_beginning=True)
        consumer.subscribe([self.settings.assignments_topic])
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(found) < expected and time.monotonic() < deadline:
                for m in consumer.consume(1000, timeout=0.5):
                    if not m.error():
                        found[m.key().decode()] = orjson.loads(m.value())["cluster_id"]
        finally:
            consumer.close()
        if len(found) < expected:
            message = (f"only {len(found)} of {expected} observations were clustered in "
                       f"{timeout:.0f}s; see {self.run.workdir / 'worker-0.log'}")
            raise RuntimeError(message)
        return found

    def _report(self, scene: Scene, assignments: dict[str, str], events: list) -> dict:
        view = ClusterView().apply_all(events)
        streams = [str(s) for s in scene.s.tolist()]
        keys = [f"{s}:{k}" for s, k in zip(streams, detection_keys(streams, scene.t.tolist()),
                                          strict=True)]
        predicted = [view.resolve(assignments[k]) for k in keys]
        members: dict[str, Counter] = {}
        for cluster, person in zip(predicted, scene.y.tolist(), strict=True):
            members.setdefault(cluster, Counter())[person] += 1
        _print_table(view, members)
        scores = score_all(scene.y, predicted)
        counts = Counter(e["type"] for e in events)
        print(f"\nevents: {dict(counts)}")
        print(f"live run vs ground truth: {scores['clusters']} clusters for "
              f"{len(set(scene.y.tolist()))} people; B-cubed precision "
              f"{scores['bcubed_precision']:.4f}, recall {scores['bcubed_recall']:.4f}, "
              f"F1 {scores['bcubed_f1']:.4f}")
        return scores


def _print_table(view: ClusterView, members: dict[str, Counter], rows: int = 12) -> None:
    clusters = sorted(view.clusters.values(), key=lambda c: -c.num_observations)
    print(f"\n{len(clusters)} realized clusters; the {min(rows, len(clusters))} largest:")
    print(f"  {'cluster id':<34} {'observations':>12} {'person':>7} {'purity':>7}")
    for cluster in clusters[:rows]:
        people = members.get(cluster.key, Counter())
        person, share = (people.most_common(1)[0] if people else ("-", 0))
        purity = share / max(sum(people.values()), 1)
        print(f"  {cluster.key:<34} {cluster.num_observations:>12} {person:>7} {purity:>7.2f}")
