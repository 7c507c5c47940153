"""The kafka-python implementation of :class:`KafkaSource` and :class:`KafkaSink`.

kafka-python verifies record CRCs in Python unless the ``crc32c`` package is installed (then in C:
:func:`crc_is_native` says which); its consumer is polled for up to ``max_records`` at a time.
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import attrgetter, itemgetter, length_hint
from typing import Any

import numpy as np

from connectors.base import ConnectorError
from connectors.kafka._common import (TP, KafkaConfigError, KafkaSource, Polled, _format_position,
                                      check_settings)
from connectors.kafka._sink import KafkaSink

try:  # kafka-python is a hard dependency of the project, but keep the error readable
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata
except ImportError as _exc:  # pragma: no cover - exercised only without kafka-python
    raise ImportError("connectors.kafka with client='kafka-python' needs kafka-python "
                      "(`pip install kafka-python`)") from _exc

__all__ = ["Source", "Sink", "crc_is_native"]

#: Settings the source owns: passed positionally, or incompatible with explicit, decoded consumption.
_SOURCE_RESERVED = {
    "bootstrap_servers": "pass it as the bootstrap_servers argument",
    "group_id": "pass it as the group_id argument",
    "key_deserializer": "the source keeps raw bytes and decodes values with its decoder",
    "value_deserializer": "the source keeps raw bytes and decodes values with its decoder",
}
_SINK_RESERVED = {
    "bootstrap_servers": "pass it as the bootstrap_servers argument",
    "key_serializer": "use the key argument",
    "value_serializer": "use the encoder argument",
}
_value, _offset, _key = attrgetter("value"), attrgetter("offset"), attrgetter("key")
#: A send future's (done, exception): ``(True, None)`` once the broker acknowledged the record.
_OUTCOME = attrgetter("is_done", "exception")


def crc_is_native() -> bool:
    """Whether kafka-python checks CRC32C in C (the ``crc32c`` package) rather than in Python."""
    try:
        from kafka.record import util
    except ImportError:  # pragma: no cover
        return False
    return getattr(util, "crc32c_c", None) is not None and getattr(util, "_crc32c", None) is util.crc32c_c


class _Listener(ConsumerRebalanceListener):
    """Forwards rebalance callbacks to the source (which applies saved positions on assignment)."""

    def __init__(self, source: "Source") -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._source._on_revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        src = self._source
        for (topic, partition), offset in src._on_assigned({(tp.topic, tp.partition) for tp in assigned}).items():
            src._consumer.seek(TopicPartition(topic, partition), offset)


class Source(KafkaSource):
    """:class:`KafkaSource` over kafka-python's ``KafkaConsumer`` (settings: its keyword arguments)."""

    client_name = "kafka-python"

    def _open(self, bootstrap_servers: Any, client_settings: dict[str, Any]) -> None:
        client_settings = {k: v for k, v in client_settings.items() if k != "enable_auto_commit"}
        check_settings(client_settings, KafkaConsumer.DEFAULT_CONFIG, _SOURCE_RESERVED, "KafkaConsumer")
        settings: dict[str, Any] = {
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,
            "client_id": f"online-gmm-{self.name}",
            **client_settings,
            "enable_auto_commit": False,
        }
        try:
            self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=self.group_id, **settings)
        except KafkaError as exc:
            raise ConnectorError(
                f"KafkaSource could not connect to bootstrap_servers={bootstrap_servers!r}: {exc}"
            ) from exc
        except (TypeError, ValueError, AssertionError) as exc:
            raise KafkaConfigError(f"invalid KafkaConsumer settings: {exc}") from exc
        if self.group_id is None:
            tps = []
            for topic in self.topics:
                parts = self._consumer.partitions_for_topic(topic)
                if not parts:
                    self._consumer.close()
                    raise ConnectorError(
                        f"topic {topic!r} does not exist on {bootstrap_servers!r}; without a group_id the "
                        "source assigns the partitions of existing topics"
                    )
                tps += [TopicPartition(topic, p) for p in self._select(topic, parts, bootstrap_servers)]
            self._consumer.assign(tps)
            self._assigned_once = True
        else:
            self._consumer.subscribe(topics=self.topics, listener=_Listener(self))

    def _poll(self, max_records: int, timeout: float) -> Polled | None:
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise ConnectorError(f"KafkaSource {self.name!r} failed to poll: {exc!r}") from exc
        parts = [(tp, msgs) for tp, msgs in polled.items() if msgs]
        if not parts:
            return None
        if len(parts) == 1:
            (tp, msgs), = parts
            every = msgs
        else:
            every = list(chain.from_iterable(msgs for _, msgs in parts))
        n = len(every)
        values = list(map(_value, every))
        if None in values:  # tombstones decode as empty records
            values = [v if v is not None else b"" for v in values]
        lengths = [len(msgs) for _, msgs in parts]
        topic = np.empty(n, dtype=object)
        topic[:] = np.repeat(np.array([tp.topic for tp, _ in parts], dtype=object), lengths)
        partition = np.repeat(np.array([tp.partition for tp, _ in parts], dtype=np.int64), lengths)
        offset = np.fromiter(map(_offset, every), dtype=np.int64, count=n)
        groups = [((tp.topic, tp.partition), msgs[0].offset, msgs[-1].offset) for tp, msgs in parts]
        return Polled(values, topic, partition, offset, list(map(_key, every)), groups)

    def _assigned(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def _seek_client(self, key: TP, offset: int) -> None:
        self._consumer.seek(TopicPartition(*key), offset)

    def _highwater(self, key: TP) -> int | None:
        return self._consumer.highwater(TopicPartition(*key))

    def _partitions_for(self, topic: str) -> set[int] | None:
        try:
            return self._consumer.partitions_for_topic(topic)
        except KafkaError as exc:
            raise ConnectorError(f"KafkaSource {self.name!r} could not read metadata: {exc!r}") from exc

    def _commit_client(self, offsets: dict[TP, int]) -> None:
        try:
            self._consumer.commit({TopicPartition(*k): OffsetAndMetadata(o, "", -1) for k, o in offsets.items()})
        except KafkaError as exc:
            raise ConnectorError(
                f"KafkaSource {self.name!r} could not commit offsets {_format_position(offsets)!r}: {exc!r}"
            ) from exc

    def _client_positions(self, keys: list[TP]) -> dict[TP, int]:
        try:
            states = self._consumer._subscription.assignment  # read-only peek, no network round-trip
        except AttributeError:  # another kafka-python layout: such partitions stay out of position()
            return {}
        out, wanted = {}, set(keys)
        for tp, state in list(states.items()):
            key = (tp.topic, tp.partition)
            offset = getattr(getattr(state, "position", None), "offset", None)
            if key in wanted and isinstance(offset, int) and offset >= 0:
                out[key] = offset
        return out

    def _close_client(self) -> None:
        self._consumer.close(autocommit=False)


class Sink(KafkaSink):
    """:class:`KafkaSink` over kafka-python's ``KafkaProducer`` (settings: its keyword arguments)."""

    client_name = "kafka-python"

    def _configure(self, settings: dict[str, Any]) -> None:
        check_settings(settings, KafkaProducer.DEFAULT_CONFIG, _SINK_RESERVED, "KafkaProducer")
        # linger 5 ms and batches of up to 256 KiB (kafka-python's defaults: 0 ms, 16 KiB): about 1.3x
        # the records/s of KafkaSink.write_columns on the local broker; a user's own values win
        self._settings = {"linger_ms": 5, "batch_size": 256 * 1024, **settings,
                          "enable_idempotence": True, "acks": "all"}
        self._producer: KafkaProducer | None = None
        self._futures: list[tuple[int, Any]] = []  # (write index, send future)
        self._refused: list[tuple[int, Exception]] = []  # (write index, error) of sends that raised

    def _make_producer(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(bootstrap_servers=self._bootstrap_servers, **self._settings)
            except KafkaError as exc:
                raise ConnectorError(
                    f"KafkaSink could not connect to bootstrap_servers={self._bootstrap_servers!r}: {exc!r}"
                ) from exc
            except (TypeError, ValueError, AssertionError) as exc:
                raise KafkaConfigError(f"invalid KafkaProducer settings: {exc}") from exc
        return self._producer

    def _produce(self, values: list[bytes], keys: list[bytes | None] | None) -> None:
        # ``send`` is mapped over the batch in C; Python runs per record only where ``send`` raised
        # (its error is kept for flush to report, then the next record)
        send, topic, futures = self._make_producer().send, self.topic, self._futures
        n = len(values)
        start = 0
        while start < n:
            rest = iter(values[start:] if start else values)
            sent = map(send, repeat(topic), rest, repeat(None) if keys is None else keys[start:] if start else keys)
            try:
                futures.extend(zip(range(self._n_written + start, self._n_written + n), sent))
                return
            except KafkaError as exc:
                failed = n - length_hint(rest) - 1
                self._refused.append((self._n_written + failed, exc))
                start = failed + 1

    def _flush_client(self, timeout: float | None) -> tuple[int, list[tuple[Any, str]]]:
        if not self._futures and not self._refused:
            return 0, []
        producer = self._make_producer()
        try:
            producer.flush(timeout=timeout)
        except KafkaError:
            pass  # per-record outcomes below carry the detail
        futures, self._futures = self._futures, []
        refused, self._refused = self._refused, []
        outcome = list(map(_OUTCOME, map(itemgetter(1), futures)))
        if not refused and outcome.count((True, None)) == len(futures):  # the clean case
            return len(futures), []
        failures: list[tuple[Any, str]] = [(index, repr(exc)) for index, exc in refused]
        delivered = 0
        for index, future in futures:  # only when some record failed: each gets its own reason
            if not future.is_done:
                failures.append((index, f"not acknowledged within {timeout} s"))
            elif future.failed():
                failures.append((index, repr(future.exception)))
            else:
                delivered += 1
        failures.sort(key=itemgetter(0))
        return delivered, failures

    def _drop_producer(self, timeout: float) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout)
            finally:
                self._producer = None
