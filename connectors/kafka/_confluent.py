"""The confluent-kafka (librdkafka) implementation of :class:`KafkaSource` and :class:`KafkaSink`.

Settings are librdkafka configuration properties; ``_`` may stand for ``.`` (``session_timeout_ms``
is ``session.timeout.ms``), so TOML tables and kafka-python-style names of the common settings work
unchanged.  librdkafka itself rejects unknown properties, with the name.

The consumer takes what its local queue holds with ``consume(num_messages, 0)`` and waits with
``poll(timeout)`` only when that is empty (a read returns as soon as one record is there, never waiting
for a full batch); ``fetch.queue.backoff.ms=10`` (librdkafka's default is 1000) made it about 2x faster
on the local broker.  The producer queues a whole batch in one C-level ``map`` over ``produce`` and reports only
failed deliveries (``delivery.report.only.error``), which :meth:`KafkaSink.flush` raises.
"""

from __future__ import annotations

import uuid
from collections import deque
from itertools import repeat
from operator import length_hint
from typing import Any

import numpy as np

from connectors.base import ConnectorError
from connectors.kafka._common import (TP, KafkaConfigError, KafkaSource, Polled, _format_position,
                                      partition_groups)
from connectors.kafka._sink import KafkaSink

try:
    from confluent_kafka import (
        OFFSET_INVALID,
        Consumer,
        KafkaError,
        KafkaException,
        Message,
        Producer,
        TopicPartition,
    )
except ImportError as _exc:  # pragma: no cover - exercised only without confluent-kafka
    raise ImportError("client='confluent' needs confluent-kafka: pip install 'online-gmm[kafka-fast]'") from _exc

__all__ = ["Source", "Sink", "librdkafka_settings"]

#: Python-side settings of confluent-kafka (callbacks), whose names keep their underscores.
_PYTHON_KEYS = {"error_cb", "throttle_cb", "stats_cb", "logger", "oauth_cb", "on_commit", "on_delivery"}
_SOURCE_RESERVED = {
    "bootstrap.servers": "pass it as the bootstrap_servers argument",
    "group.id": "pass it as the group_id argument",
    "on_commit": "the source commits synchronously, only in commit()",
    "enable.auto.offset.store": "the source commits explicit offsets",
}
_SINK_RESERVED = {
    "bootstrap.servers": "pass it as the bootstrap_servers argument",
    "on_delivery": "the sink collects failed deliveries itself and raises them in flush()",
    "delivery.report.only.error": "the sink sets it",
}
_FATAL_MESSAGE_ERRORS = {
    KafkaError._AUTHENTICATION, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._SSL,
}
_value, _key, _offset, _partition, _error = Message.value, Message.key, Message.offset, Message.partition, Message.error


def librdkafka_settings(settings: dict[str, Any], reserved: dict[str, str], owner: str) -> dict[str, Any]:
    """Settings as librdkafka property names (``_`` -> ``.``), refusing the reserved ones.

    >>> librdkafka_settings({"session_timeout_ms": 2000, "linger.ms": 5, "error_cb": print}, {}, "x")
    {'session.timeout.ms': 2000, 'linger.ms': 5, 'error_cb': <built-in function print>}
    """
    out = {}
    for key, value in settings.items():
        prop = key if key in _PYTHON_KEYS else key.replace("_", ".")
        if prop in reserved:
            raise KafkaConfigError(f"{owner} setting {key!r} cannot be given here: {reserved[prop]}")
        out[prop] = value
    return out


def _servers(bootstrap_servers: Any) -> str:
    return bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)


class Source(KafkaSource):
    """:class:`KafkaSource` over confluent-kafka's ``Consumer`` (settings: librdkafka properties)."""

    client_name = "confluent"

    def _open(self, bootstrap_servers: Any, client_settings: dict[str, Any]) -> None:
        settings = librdkafka_settings(client_settings, _SOURCE_RESERVED, "confluent-kafka Consumer")
        settings.pop("enable.auto.commit", None)
        conf = {
            "bootstrap.servers": _servers(bootstrap_servers),
            # librdkafka needs a group even for manual assignment; nothing is committed without one
            "group.id": self.group_id or f"online-gmm-nogroup-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": False,
            "client.id": f"online-gmm-{self.name}",
            **settings,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
        try:
            self._consumer = Consumer(conf)
        except (KafkaException, TypeError, ValueError) as exc:
            raise KafkaConfigError(f"invalid confluent-kafka Consumer settings: {exc}") from exc
        self._owned: set[TP] = set()
        self._asked: set[TP] = set()  # partitions whose committed offset was asked for
        if self.group_id is None:
            tps = []
            for topic in self.topics:
                parts = self._partitions_for(topic, timeout=10.0)
                if not parts:
                    self._consumer.close()
                    raise ConnectorError(
                        f"topic {topic!r} does not exist on {bootstrap_servers!r}; without a group_id the "
                        "source assigns the partitions of existing topics"
                    )
                tps += [TopicPartition(topic, p) for p in self._select(topic, parts, bootstrap_servers)]
            self._consumer.assign(tps)
            self._owned = {(tp.topic, tp.partition) for tp in tps}
            self._assigned_once = True
        else:
            self._consumer.subscribe(self.topics, on_assign=self._cb_assign, on_revoke=self._cb_revoke,
                                     on_lost=self._cb_revoke)

    # librdkafka calls these from inside consume()/poll(), on this thread
    def _cb_assign(self, consumer: Any, partitions: list[Any]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        start = self._on_assigned(keys)
        for tp in partitions:
            offset = start.get((tp.topic, tp.partition))
            if offset is not None:
                tp.offset = offset
        consumer.assign(partitions)
        self._owned = keys

    def _cb_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._on_revoked(keys)
        self._owned -= set(keys)
        self._asked -= set(keys)

    def _poll(self, max_records: int, timeout: float) -> Polled | None:
        consumer = self._consumer
        try:
            msgs = consumer.consume(max_records, 0)
            if not msgs and timeout > 0:
                first = consumer.poll(timeout)
                if first is None:
                    return None
                msgs = [first]
                if max_records > 1:
                    msgs += consumer.consume(max_records - 1, 0)
        except KafkaException as exc:
            raise ConnectorError(f"KafkaSource {self.name!r} failed to consume: {exc!r}") from exc
        if any(map(_error, msgs)):
            msgs = self._drop_errors(msgs)
        n = len(msgs)
        if not n:
            return None
        values = list(map(_value, msgs))
        if None in values:  # tombstones decode as empty records
            values = [v if v is not None else b"" for v in values]
        topic = np.empty(n, dtype=object)
        if len(self.topics) == 1:
            topic[:] = self.topics[0]
        else:
            topic[:] = list(map(Message.topic, msgs))
        partition = np.fromiter(map(_partition, msgs), dtype=np.int64, count=n)
        offset = np.fromiter(map(_offset, msgs), dtype=np.int64, count=n)
        return Polled(values, topic, partition, offset, list(map(_key, msgs)),
                      partition_groups(topic, partition, offset))

    def _drop_errors(self, msgs: list[Any]) -> list[Any]:
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal() or err.code() in _FATAL_MESSAGE_ERRORS:
                raise ConnectorError(f"KafkaSource {self.name!r} cannot go on: {err}")
            else:  # transient (librdkafka retries) or a vanished topic (the existence check reports it)
                self._last_existence_check = 0.0
        return good

    def _assigned(self) -> set[TP]:
        return set(self._owned)

    def _seek_client(self, key: TP, offset: int) -> None:
        try:
            self._consumer.seek(TopicPartition(key[0], key[1], offset))
        except KafkaException:  # not fetching yet: restate the assignment with the offsets
            if self.group_id is not None:
                raise
            positions = {**self._positions, key: offset}
            self._consumer.assign([TopicPartition(t, p, positions.get((t, p), OFFSET_INVALID))
                                   for t, p in sorted(self._owned)])

    def _highwater(self, key: TP) -> int | None:
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
        except KafkaException:
            return None
        return high if high >= 0 else None

    def _partitions_for(self, topic: str, timeout: float = 5.0) -> set[int] | None:
        try:
            meta = self._consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise ConnectorError(f"KafkaSource {self.name!r} could not read metadata: {exc!r}") from exc
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return set(found.partitions)

    def _commit_client(self, offsets: dict[TP, int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
            failed = [tp for tp in result or () if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except KafkaException as exc:
            raise ConnectorError(
                f"KafkaSource {self.name!r} could not commit offsets {_format_position(offsets)!r}: {exc!r}"
            ) from exc

    def _client_positions(self, keys: list[TP]) -> dict[TP, int]:
        # librdkafka knows a partition's position only once a message of it was consumed; a group
        # member that starts at a committed offset asks the group for it, once per assignment
        try:
            tps = self._consumer.position([TopicPartition(*k) for k in keys])
            out = {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}
            ask = [k for k in keys if k not in out and k not in self._asked]
            if ask and self.group_id is not None:
                self._asked.update(ask)
                tps = self._consumer.committed([TopicPartition(*k) for k in ask], timeout=5.0)
                out.update({(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0})
        except KafkaException:
            return {}
        return out

    def _close_client(self) -> None:
        self._consumer.close()


class Sink(KafkaSink):
    """:class:`KafkaSink` over confluent-kafka's ``Producer`` (settings: librdkafka properties)."""

    client_name = "confluent"

    def _configure(self, settings: dict[str, Any]) -> None:
        conf = librdkafka_settings(settings, _SINK_RESERVED, "confluent-kafka Producer")
        self._conf = {
            "bootstrap.servers": _servers(self._bootstrap_servers),
            "linger.ms": 5,
            # the Java client's (and kafka-python's) key hashing: a key lands on the same partition
            # whichever client wrote it (librdkafka's own default hashes with CRC32)
            "partitioner": "murmur2_random",
            **conf,
            "enable.idempotence": True,
            "acks": "all",
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        self._producer: Producer | None = None
        self._failures: list[tuple[Any, str]] = []
        self._queued = 0  # records handed to produce() since the last flush

    def _make_producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(self._conf)
            except (KafkaException, TypeError, ValueError) as exc:
                raise KafkaConfigError(f"invalid confluent-kafka Producer settings: {exc}") from exc
        return self._producer

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            value = msg.value() or b""
            self._failures.append((f"(key={msg.key()!r}, value={value[:40]!r})", str(err)))

    def _produce(self, values: list[bytes], keys: list[bytes | None] | None) -> None:
        # One C-level loop (``map`` drained by a zero-length ``deque``) hands the whole batch to
        # librdkafka; Python runs per record only where ``produce`` raised: a full local queue
        # (BufferError: deliveries drain it, then the same record again) or a record refused at once
        # (KafkaException, e.g. too large: noted for flush, then the next record).
        producer = self._make_producer()
        produce, poll, topic = producer.produce, producer.poll, self.topic
        n = len(values)
        self._queued += n
        start = 0
        while start < n:
            rest = iter(values[start:] if start else values)
            try:
                if keys is None:
                    deque(map(produce, repeat(topic), rest), maxlen=0)
                else:
                    deque(map(produce, repeat(topic), rest, keys[start:] if start else keys), maxlen=0)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                start = n - length_hint(rest) - 1
                poll(0.05)
            except KafkaException as exc:
                failed = n - length_hint(rest) - 1
                self._failures.append((self._n_written + failed, str(exc.args[0] if exc.args else exc)))
                start = failed + 1

    def _flush_client(self, timeout: float | None) -> tuple[int, list[tuple[Any, str]]]:
        if self._producer is None or (not self._queued and not self._failures):
            return 0, []
        remaining = self._producer.flush(-1 if timeout is None else timeout)
        failures, self._failures = self._failures, []
        delivered = self._queued - len(failures) - remaining
        self._queued = 0
        if remaining:
            failures.append(("(still queued)", f"{remaining} record(s) not acknowledged within {timeout} s"))
        return max(delivered, 0), failures

    def _drop_producer(self, timeout: float) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout)
            finally:
                self._producer = None
                self._queued = 0
