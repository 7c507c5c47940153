"""Offsets committed to a consumer group by a job that reads its partitions without joining it.

A scaled-out job's workers read their partitions without a group (each is assigned its partitions),
and its coordinator keeps every partition's position in its checkpoint. So that the group still
shows how far the job got (consumer-lag dashboards, ``kafka-consumer-groups --describe``) and a
later job of that group starts where it stopped, :class:`GroupOffsets` commits the checkpointed
positions to the group after each checkpoint, as a one-process pipeline's source does. It never
joins the group (a "simple consumer" commit): it cannot take partitions from a member, and a group
with active members refuses its commits.
"""

from __future__ import annotations

from typing import Any, Mapping

from connectors.base import ConnectorError
from connectors.kafka._common import TP, _format_position, _parse_position, resolve_client

__all__ = ["GroupOffsets"]


class GroupOffsets:
    """Commit and read a consumer group's offsets without joining the group.

    Parameters
    ----------
    bootstrap_servers : str or list of str
    group_id : str
    client : {"confluent", "kafka-python"}, optional
        Default: confluent-kafka when it is installed.
    settings : dict, optional
        The source's client settings (security, timeouts); consumer-only settings are ignored by
        the commit.
    """

    def __init__(self, bootstrap_servers: Any, group_id: str, *, client: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        if not isinstance(group_id, str) or not group_id:
            raise ValueError(f"group_id must be a non-empty string, got {group_id!r}")
        self.group_id = group_id
        self.client = resolve_client(client)
        settings = dict(settings or {})
        try:
            if self.client == "confluent":
                from confluent_kafka import Consumer

                from connectors.kafka._confluent import _SOURCE_RESERVED, _servers, librdkafka_settings
                conf = librdkafka_settings(settings, _SOURCE_RESERVED, "confluent-kafka Consumer")
                self._consumer = Consumer({"bootstrap.servers": _servers(bootstrap_servers), **conf,
                                           "group.id": group_id, "enable.auto.commit": False})
            else:
                from kafka import KafkaConsumer
                settings.pop("enable_auto_commit", None)
                self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id,
                                               enable_auto_commit=False, **settings)
        except Exception as exc:  # noqa: BLE001 - each client raises its own types
            raise ConnectorError(f"cannot open a {self.client} client to commit offsets of group "
                                 f"{group_id!r}: {exc}") from exc

    def commit(self, position: Mapping[str, Any]) -> None:
        """Commit next offsets, given as a source position ``{topic: {partition: offset}}``; raises
        :class:`ConnectorError` if the group refuses them."""
        offsets = _parse_position(position)
        if not offsets:
            return
        try:
            if self.client == "confluent":
                from confluent_kafka import TopicPartition
                result = self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                    asynchronous=False)
                failed = [tp for tp in result or () if tp.error is not None]
                if failed:
                    raise RuntimeError(failed[0].error)
            else:
                from kafka import OffsetAndMetadata, TopicPartition
                self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                       for (t, p), o in sorted(offsets.items())})
        except Exception as exc:  # noqa: BLE001 - each client raises its own types
            raise ConnectorError(f"could not commit offsets {_format_position(offsets)!r} to group "
                                 f"{self.group_id!r}: {exc!r}") from exc

    def committed(self, keys: list[TP]) -> dict[TP, int]:
        """The group's committed next offset of each ``(topic, partition)`` that has one."""
        if self.client == "confluent":
            from confluent_kafka import TopicPartition
            tps = self._consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=10.0)
            return {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}
        from kafka import TopicPartition
        out = {}
        for t, p in keys:
            offset = self._consumer.committed(TopicPartition(t, p))
            if offset is not None:
                out[(t, p)] = int(offset)
        return out

    def close(self) -> None:
        """Close the client; idempotent."""
        consumer, self._consumer = getattr(self, "_consumer", None), None
        if consumer is not None:
            consumer.close()
