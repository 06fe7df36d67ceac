"""When a worker may subscribe: every topic listed with partitions that all have a leader."""

from __future__ import annotations

import faust
from confluent_kafka import KafkaError
from confluent_kafka.admin import ClusterMetadata, PartitionMetadata, TopicMetadata
from faust.assignor.leader_assignor import LeaderAssignor

from agents.app import leader_topic
from app.kafka_client import unready_topics
from app.settings import Settings


def topic(name: str, leaders: list[int], error: KafkaError | None = None) -> TopicMetadata:
    """Metadata of one topic whose partition ``i`` has the leader ``leaders[i]`` (-1: none)."""
    meta = TopicMetadata()
    meta.topic, meta.error = name, error
    for i, leader in enumerate(leaders):
        partition = PartitionMetadata()
        partition.id, partition.leader = i, leader
        meta.partitions[i] = partition
    return meta


def cluster(*topics: TopicMetadata) -> ClusterMetadata:
    meta = ClusterMetadata()
    meta.topics = {t.topic: t for t in topics}
    return meta


def test_topics_listed_with_a_leader_for_every_partition_are_ready() -> None:
    metadata = cluster(topic("cam0", [1, 1]), topic("cam1", [2]))
    assert unready_topics(metadata, ["cam0", "cam1"]) == {}


def test_each_unready_topic_says_why() -> None:
    metadata = cluster(
        topic("listed", [1, 1]),
        topic("electing", [1, -1, 1, -1]),
        topic("empty", []),
        topic("failing", [], KafkaError(KafkaError.LEADER_NOT_AVAILABLE)),
    )
    wanted = ["listed", "electing", "empty", "failing", "created-a-moment-ago"]
    assert unready_topics(metadata, wanted) == {
        "electing": "no leader for partitions [1, 3]",
        "empty": "no partitions",
        "failing": "Broker: Leader not available",
        "created-a-moment-ago": "not listed",
    }


def test_a_partition_with_an_error_is_not_ready() -> None:
    meta = topic("cam0", [1, 1])
    meta.partitions[1].error = KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
    assert unready_topics(cluster(meta), ["cam0"]) == {"cam0": "no leader for partitions [1]"}


def test_the_leader_topic_is_the_one_faust_elects_its_leader_by() -> None:
    settings = Settings.from_env({"FVC_APP_ID": "cams"})
    faust_name = LeaderAssignor(faust.App(settings.app_id))._leader_topic_name
    assert leader_topic(settings) == faust_name == "cams-__assignor-__leader"
