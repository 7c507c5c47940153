"""Kafka source and sink over kafka-python.

:class:`KafkaSource` reads one or more topics in a consumer group and decodes records into float arrays
with a :class:`~connectors.decoders.Decoder`.  Offsets are never auto-committed: the position of the
source is the *next* offset per partition, as JSON data ``{"topic": {"partition": next_offset}}``
(partition numbers as strings), which the caller checkpoints; :meth:`KafkaSource.seek` restores it
(applied as partitions are assigned) and :meth:`KafkaSource.commit` writes it to the group only when told
to, after the state built from those records is durably checkpointed and the sinks are flushed.

:class:`KafkaSink` writes JSON (or any encoded) records with an idempotent producer (``acks="all"``) and
surfaces every failed delivery in :meth:`KafkaSink.flush`.  It cannot take records back, so on a restore
it keeps what was written and readers de-duplicate on ``(source, partition, offset)``.

A dead-letter topic is the shared dead-letter wrapper around a :class:`KafkaSink`; there is no separate
Kafka dead-letter format.

Examples
--------
The position format, without a broker:

>>> _parse_position({"events": {"0": 12, "2": 7}})
{('events', 0): 12, ('events', 2): 7}
>>> _format_position({("events", 2): 7, ("events", 0): 12})
{'events': {'0': 12, '2': 7}}
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from connectors.base import Batch, ConnectorError, Position, PositionError, Reject, Sink, Source

try:  # kafka-python is a hard dependency of the project, but keep the error readable
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata
except ImportError as _exc:  # pragma: no cover - exercised only without kafka-python
    raise ImportError(
        "connectors.kafka needs kafka-python (`pip install kafka-python`)"
    ) from _exc

__all__ = ["KafkaSource", "KafkaSink", "KafkaConfigError", "json_encoder"]


class KafkaConfigError(ConnectorError, ValueError):
    """An invalid Kafka connector setting (unknown key, forbidden value)."""


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
#: How often (seconds) an idle source re-checks that the topics/partitions it has positions for exist.
_EXISTENCE_CHECK_INTERVAL = 2.0

TP = tuple[str, int]


def _check_settings(settings: Mapping[str, Any], allowed: Iterable[str], reserved: Mapping[str, str],
                    owner: str) -> None:
    allowed = set(allowed)
    for key in settings:
        if key in reserved:
            raise KafkaConfigError(f"{owner} setting {key!r} cannot be given here: {reserved[key]}")
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise KafkaConfigError(
            f"unknown {owner} setting(s) {unknown!r}; expected keyword arguments accepted by "
            f"kafka-python's {owner} (e.g. security_protocol, sasl_mechanism, ssl_cafile, client_id)"
        )


def _parse_position(position: Position) -> dict[TP, int]:
    """``{"topic": {"partition": offset}}`` -> ``{(topic, partition): offset}``, validated."""
    if not isinstance(position, Mapping):
        raise ValueError(
            f"position must be a dict {{topic: {{partition: next_offset}}}}, got {position!r}"
        )
    parsed: dict[TP, int] = {}
    for topic, partitions in position.items():
        if not isinstance(topic, str) or not isinstance(partitions, Mapping):
            raise ValueError(
                f"position must map topic names to {{partition: next_offset}} dicts, got "
                f"{topic!r}: {partitions!r}"
            )
        for partition, offset in partitions.items():
            try:
                part = int(partition)
            except (TypeError, ValueError):
                raise ValueError(
                    f"position[{topic!r}] keys must be partition numbers, got {partition!r}"
                ) from None
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or part < 0:
                raise ValueError(
                    f"position[{topic!r}][{partition!r}] must be a non-negative int offset, got {offset!r}"
                )
            parsed[(topic, part)] = offset
    return parsed


def _format_position(offsets: Mapping[TP, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[str(partition)] = int(offset)
    return out


class _Listener(ConsumerRebalanceListener):
    """Forwards rebalance callbacks to the source (which applies saved positions on assignment)."""

    def __init__(self, source: "KafkaSource") -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._source._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._source._on_assigned(assigned)


class KafkaSource(Source):
    """Read Kafka topics in a consumer group and decode the values into float vectors.

    Parameters
    ----------
    topics : str or sequence of str
        Topic(s) to subscribe to.
    bootstrap_servers : str or list of str
        ``"host:port"`` of one or more brokers.
    group_id : str or None
        Consumer group.  ``None`` reads every partition of the topics without a group (manual
        assignment, no :meth:`commit`); the partitions are looked up when the source is created.
    decoder : Decoder
        Turns record values (bytes) into rows; see :mod:`connectors.decoders`.
    name : str or None, default None
        The ``source`` field of every record's meta; default ``"kafka:<topics>"``.
    max_idle_s : float or None, default None
        A Kafka source normally never ends (status ``"idle"`` when nothing arrives).  With a number,
        :meth:`read` answers ``"end"`` once no record has arrived for that many seconds (finite runs,
        demos, benchmarks).
    **client_settings
        Any other :class:`kafka.KafkaConsumer` setting (SASL/SSL, ``client_id``, ``session_timeout_ms``,
        ...), passed through.  Defaults changed here: ``enable_auto_commit=False`` (``True`` is refused),
        ``auto_offset_reset="earliest"`` (where neither a saved position nor a committed offset exists),
        ``allow_auto_create_topics=False``.

    Notes
    -----
    Position semantics: the position lists the next offset of every partition this source has read from
    or was seeked to and still owns.  :meth:`seek` keeps offsets for partitions not yet assigned and
    applies them when the group assigns them (after the first assignment, offsets of partitions given
    to other members are dropped: they belong to those members' checkpoints).  Partitions without a
    saved offset start at the group's committed offset, else at ``auto_offset_reset``.

    A saved or reached offset that the broker's log no longer has (the topic or partition was deleted,
    the topic was recreated, a memory-storage broker restarted: the partition's high-water mark is
    below the offset, or the client had to reset backwards) raises :class:`PositionError` from
    :meth:`read` instead of silently waiting or re-reading.  A recreated topic that already holds at
    least as many records as the saved offset cannot be told apart by offsets alone.

    Across a group rebalance, records returned but not yet committed are delivered again to the
    partition's new owner (at-least-once); a pipeline that checkpoints and commits before partitions
    move, or runs one consumer per group, gets exactly-once state.
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        bootstrap_servers: str | Sequence[str],
        group_id: str | None,
        decoder: Any,
        *,
        name: str | None = None,
        max_idle_s: float | None = None,
        **client_settings: Any,
    ) -> None:
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        if not topic_list or not all(isinstance(t, str) and t for t in topic_list):
            raise ValueError(f"topics must be a topic name or a non-empty list of names, got {topics!r}")
        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise ValueError(f"group_id must be a non-empty string or None, got {group_id!r}")
        if not callable(getattr(decoder, "decode_many", None)):
            raise TypeError(f"decoder must provide decode_many(raws), got {decoder!r}")
        if max_idle_s is not None and not (isinstance(max_idle_s, (int, float)) and max_idle_s >= 0):
            raise ValueError(f"max_idle_s must be None or a number >= 0, got {max_idle_s!r}")
        if client_settings.get("enable_auto_commit", False) is not False:
            raise KafkaConfigError(
                "enable_auto_commit must be False for KafkaSource: offsets are committed only by "
                f"KafkaSource.commit() after a checkpoint; got {client_settings['enable_auto_commit']!r}"
            )
        _check_settings(client_settings, KafkaConsumer.DEFAULT_CONFIG, _SOURCE_RESERVED, "KafkaConsumer")

        self.topics = topic_list
        self.group_id = group_id
        self.decoder = decoder
        self.name = name if name is not None else "kafka:" + ",".join(topic_list)
        self.max_idle_s = max_idle_s

        settings: dict[str, Any] = {
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,
            "client_id": f"online-gmm-{self.name}",
            **client_settings,
            "enable_auto_commit": False,
        }
        self._pending: dict[TP, int] = {}  # seeked, waiting for assignment
        self._positions: dict[TP, int] = {}  # owned partitions: next offset to return
        self._floor: dict[TP, int] = {}  # highest offset ever known per partition: the log must reach it
        self._stale_hw: dict[TP, int | None] = {}  # highwater seen before an in-place seek
        self._assigned_once = False
        self._last_record = time.monotonic()
        self._last_existence_check = 0.0
        self._closed = False
        try:
            self._consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, **settings)
        except KafkaError as exc:
            raise ConnectorError(
                f"KafkaSource could not connect to bootstrap_servers={bootstrap_servers!r}: {exc}"
            ) from exc
        except (TypeError, ValueError, AssertionError) as exc:
            raise KafkaConfigError(f"invalid KafkaConsumer settings: {exc}") from exc
        if group_id is None:
            tps = []
            for topic in topic_list:
                parts = self._consumer.partitions_for_topic(topic)
                if not parts:
                    self._consumer.close()
                    raise ConnectorError(
                        f"topic {topic!r} does not exist on {bootstrap_servers!r}; without a group_id the "
                        "source assigns the partitions of existing topics"
                    )
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            self._assigned_once = True
        else:
            self._consumer.subscribe(topics=topic_list, listener=_Listener(self))

    # ------------------------------------------------------------------ rebalance callbacks
    def _on_revoked(self, revoked: Iterable[Any]) -> None:
        for tp in revoked:
            self._positions.pop((tp.topic, tp.partition), None)
            self._stale_hw.pop((tp.topic, tp.partition), None)

    def _on_assigned(self, assigned: Iterable[Any]) -> None:
        owned = {(tp.topic, tp.partition) for tp in assigned}
        for key in owned:
            if key in self._pending:
                offset = self._pending.pop(key)
                self._consumer.seek(TopicPartition(*key), offset)
                self._positions[key] = offset
        # offsets for partitions another member owns belong to that member's checkpoint
        for key in list(self._pending):
            if key not in owned:
                del self._pending[key]
        self._assigned_once = True

    # ------------------------------------------------------------------ Source API
    def assignment(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this member currently owns, sorted."""
        self._check_open()
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def position(self) -> Position:
        """Next offset per partition, ``{"topic": {"partition": offset}}`` (JSON-serialisable)."""
        return _format_position({**self._pending, **self._positions})

    def seek(self, position: Position) -> None:
        """Resume from ``position`` (as returned by :meth:`position`).

        Offsets of partitions already assigned are applied at once, the others when the group assigns
        them.  Whether the offsets still exist is checked by the next :meth:`read`.

        Raises
        ------
        ValueError
            If ``position`` is malformed or names a topic this source does not read.
        """
        self._check_open()
        parsed = _parse_position(position)
        for topic, _ in parsed:
            if topic not in self.topics:
                raise ValueError(
                    f"position names topic {topic!r}, which this source does not read (topics={self.topics!r})"
                )
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for key, offset in parsed.items():
            self._floor[key] = max(self._floor.get(key, 0), offset)
            if key in assigned:
                tp = TopicPartition(*key)
                self._stale_hw[key] = self._consumer.highwater(tp)
                self._consumer.seek(tp, offset)
                self._positions[key] = offset
            elif self.group_id is None:
                raise ValueError(
                    f"position names partition {key[1]} of topic {key[0]!r}, which does not exist "
                    f"(assigned: {sorted(assigned)!r})"
                )
            else:
                self._pending[key] = offset
                self._positions.pop(key, None)
        self._last_existence_check = 0.0  # check the new offsets on the next read

    def commit(self, position: Position | None = None) -> None:
        """Commit ``position`` (default: the current one) as the group's offsets.

        Only partitions this member currently owns are committed.  Call it after the state built from
        the records before ``position`` is durably checkpointed and the sinks are flushed.

        Raises
        ------
        ConnectorError
            If the source has no group, or the broker refuses the commit (e.g. during a rebalance).
        """
        self._check_open()
        if self.group_id is None:
            raise ConnectorError("KafkaSource.commit needs a group_id; this source was created with group_id=None")
        offsets = _parse_position(self.position() if position is None else position)
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        to_commit = {
            TopicPartition(*key): OffsetAndMetadata(offset, "", -1)
            for key, offset in offsets.items()
            if key in owned
        }
        if not to_commit:
            return
        try:
            self._consumer.commit(to_commit)
        except KafkaError as exc:
            raise ConnectorError(
                f"KafkaSource {self.name!r} could not commit offsets {_format_position(offsets)!r}: {exc!r}"
            ) from exc

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Poll at most ``max_records`` records, waiting at most ``timeout`` seconds.

        Returns
        -------
        Batch
            Status ``"records"`` or ``"idle"`` (``"end"`` only with ``max_idle_s``).  Good-record meta
            and reject meta: ``{"source", "topic", "partition", "offset", "key"}``.

        Raises
        ------
        PositionError
            If a saved or reached offset no longer exists in the broker's log.
        ConnectorError
            On a broker error the client cannot recover from.
        """
        self._check_open()
        if isinstance(max_records, bool) or not isinstance(max_records, (int, np.integer)) or max_records < 1:
            raise ValueError(f"max_records must be an int >= 1, got {max_records!r}")
        timeout = self.timeout if timeout is None else timeout
        if not (isinstance(timeout, (int, float)) and timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=int(max_records))
        except KafkaError as exc:
            raise ConnectorError(f"KafkaSource {self.name!r} failed to poll: {exc!r}") from exc

        raws: list[bytes] = []
        metas: list[dict[str, Any]] = []
        name = self.name
        for tp, messages in polled.items():
            if not messages:
                continue
            key = (tp.topic, tp.partition)
            expected = self._positions.get(key)
            if expected is not None and messages[0].offset < expected:
                self._position_lost(
                    key, expected, f"the client was reset back to offset {messages[0].offset}"
                )
            for m in messages:
                value = m.value
                raws.append(value if value is not None else b"")
                k = m.key
                metas.append({
                    "source": name,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": m.offset,
                    "key": k.decode("utf-8", errors="replace") if k is not None else None,
                })
            nxt = messages[-1].offset + 1
            self._positions[key] = nxt
            self._stale_hw.pop(key, None)
            if nxt > self._floor.get(key, 0):
                self._floor[key] = nxt
        self._adopt_client_positions()
        self._check_highwater()

        now = time.monotonic()
        if not raws:
            if now - self._last_existence_check > _EXISTENCE_CHECK_INTERVAL:
                self._last_existence_check = now
                self._check_existence()
            status = "idle"
            if self.max_idle_s is not None and now - self._last_record >= self.max_idle_s:
                status = "end"
            return Batch(np.empty((0, self._n_features())), [], [], self.position(), status)
        self._last_record = now

        X, good, bad = self.decoder.decode_many(raws)
        meta = [metas[i] for i in good]
        rejects = [Reject(reason, raws[i], metas[i]) for i, reason in bad]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            X = X.reshape(len(meta), -1)
        return Batch(X, meta, rejects, self.position(), "records")

    def close(self) -> None:
        """Leave the group and close the connections without committing. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        except Exception:  # closing must not mask the caller's error
            pass

    # ------------------------------------------------------------------ checks
    def _n_features(self) -> int:
        n = getattr(self.decoder, "n_features", None)
        return int(n) if n is not None else 0

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"KafkaSource {self.name!r} is closed")

    def _position_lost(self, key: TP, offset: int, why: str) -> None:
        topic, partition = key
        raise PositionError(
            f"KafkaSource {self.name!r}: offset {offset} of topic {topic!r} partition {partition} no longer "
            f"exists in the broker's log ({why}). The topic was deleted or recreated, or the broker lost "
            "its data; the checkpointed/committed position cannot be honoured. Restore from an older "
            "checkpoint or start over with a fresh position and group."
        )

    def _adopt_client_positions(self) -> None:
        """Owned partitions nothing was read from yet: take the client's resolved start offset."""
        try:
            states = self._consumer._subscription.assignment  # read-only peek, no network round-trip
        except AttributeError:  # another kafka-python layout: such partitions stay out of position()
            return
        for tp, state in list(states.items()):
            key = (tp.topic, tp.partition)
            if key in self._positions or key in self._pending:
                continue
            offset = getattr(getattr(state, "position", None), "offset", None)
            if isinstance(offset, int) and offset >= 0:
                self._positions[key] = offset

    def _check_highwater(self) -> None:
        # a partition's high-water mark never decreases in a healthy log
        for tp in self._consumer.assignment():
            key = (tp.topic, tp.partition)
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            if key in self._stale_hw:
                if hw == self._stale_hw[key]:
                    continue  # not refreshed since the in-place seek
                del self._stale_hw[key]
            floor = max(self._positions.get(key, 0), self._floor.get(key, 0))
            if hw < floor:
                self._position_lost(key, floor, f"its high-water mark is {hw}")

    def _check_existence(self) -> None:
        """Topics/partitions we hold offsets for must exist (a vanished topic is never assigned)."""
        keys = set(self._pending) | set(self._floor)
        if not keys:
            return
        by_topic: dict[str, set[int]] = {}
        for topic, partition in keys:
            by_topic.setdefault(topic, set()).add(partition)
        for topic, partitions in sorted(by_topic.items()):
            try:
                existing = self._consumer.partitions_for_topic(topic)
            except KafkaError as exc:
                raise ConnectorError(f"KafkaSource {self.name!r} could not read metadata: {exc!r}") from exc
            missing = sorted(partitions - set(existing or ()))
            if missing:
                key = (topic, missing[0])
                offset = self._pending.get(key, self._floor.get(key, 0))
                why = ("the topic does not exist" if not existing else
                       f"the topic has partitions {sorted(existing)!r}")
                self._position_lost(key, offset, why)


# ---------------------------------------------------------------------- sink
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable: {value!r}")


def _strict(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _strict(value.item())
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def json_encoder(record: Mapping[str, Any]) -> bytes:
    """Compact, strict UTF-8 JSON: numpy values become numbers and lists, NaN and infinities ``null``.

    >>> json_encoder({"a": np.float64(1.5), "b": np.arange(2), "c": float("nan")})
    b'{"a":1.5,"b":[0,1],"c":null}'
    """
    try:
        text = json.dumps(record, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere
        text = json.dumps(_strict(record), separators=(",", ":"), default=_json_default, allow_nan=False)
    return text.encode("utf-8")


def _key_function(key: str | Callable[[Mapping[str, Any]], Any] | None) -> Callable[[Mapping[str, Any]], bytes | None]:
    def to_bytes(value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        return str(value).encode("utf-8")

    if key is None:
        return lambda record: None
    if isinstance(key, str):
        field = key
        return lambda record: to_bytes(record.get(field))
    if callable(key):
        return lambda record: to_bytes(key(record))
    raise TypeError(f"key must be None, a field name or a callable(record), got {key!r}")


class KafkaSink(Sink):
    """Write records to a Kafka topic with an idempotent producer.

    Parameters
    ----------
    topic : str
        Destination topic.
    bootstrap_servers : str or list of str
        ``"host:port"`` of one or more brokers.
    encoder : callable or None, default None
        ``encoder(record) -> bytes``; default :func:`json_encoder`.
    key : str, callable or None, default None
        Record key: the name of a field of the record, or ``key(record) -> bytes | str | None``.
    **producer_settings
        Any other :class:`kafka.KafkaProducer` setting (SASL/SSL, ``linger_ms``, ``compression_type``,
        ``max_request_size``, ...).  ``enable_idempotence=True`` and ``acks="all"`` are enforced.

    Notes
    -----
    :meth:`write` queues records; :meth:`flush` waits for every acknowledgement and raises
    :class:`ConnectorError` naming the failed records.  After a failure the producer is recreated, so
    a later :meth:`write` works again (e.g. after a broker restart lost the producer id).
    Kafka cannot take records back: :meth:`restore` keeps what was already written, and readers
    de-duplicate on the ``source``/``partition``/``offset`` fields of each record.
    """

    def __init__(
        self,
        topic: str,
        bootstrap_servers: str | Sequence[str],
        *,
        encoder: Callable[[Mapping[str, Any]], bytes] | None = None,
        key: str | Callable[[Mapping[str, Any]], Any] | None = None,
        **producer_settings: Any,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if encoder is not None and not callable(encoder):
            raise TypeError(f"encoder must be a callable(record) -> bytes, got {encoder!r}")
        for name, required in (("enable_idempotence", True), ("acks", "all")):
            if name in producer_settings and producer_settings[name] not in (required, -1 if name == "acks" else required):
                raise KafkaConfigError(
                    f"KafkaSink needs {name}={required!r} (idempotent, fully acknowledged writes); "
                    f"got {name}={producer_settings[name]!r}"
                )
        _check_settings(producer_settings, KafkaProducer.DEFAULT_CONFIG, _SINK_RESERVED, "KafkaProducer")
        self.topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._encode = encoder or json_encoder
        self._key = _key_function(key)
        self._settings = {**producer_settings, "enable_idempotence": True, "acks": "all"}
        self._producer: KafkaProducer | None = None
        self._futures: list[tuple[int, Any]] = []
        self._n_written = 0
        self._n_delivered = 0
        self._closed = False
        self._make_producer()  # fail early on bad settings or an unreachable cluster

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

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue ``records`` (dicts) for delivery; failures surface in :meth:`flush`."""
        if self._closed:
            raise ConnectorError(f"KafkaSink for topic {self.topic!r} is closed")
        producer = self._make_producer()
        for record in records:
            index = self._n_written
            try:
                value = self._encode(record)
                key = self._key(record)
            except (TypeError, ValueError) as exc:
                raise ConnectorError(f"KafkaSink cannot encode record {index}: {exc}; record={record!r}") from exc
            self._n_written += 1
            try:
                future = producer.send(self.topic, value=value, key=key)
            except KafkaError as exc:
                future = exc
            self._futures.append((index, future))

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises
        ------
        ConnectorError
            Naming how many and which records (by write index) failed, and why.
        """
        if not self._futures:
            return
        producer = self._make_producer()
        try:
            producer.flush(timeout=timeout)
        except KafkaError:
            pass  # per-record outcomes below carry the detail
        failures: list[tuple[int, str]] = []
        for index, future in self._futures:
            if isinstance(future, Exception):
                failures.append((index, repr(future)))
            elif not future.is_done:
                failures.append((index, f"not acknowledged within {timeout} s"))
            elif future.failed():
                failures.append((index, repr(future.exception)))
            else:
                self._n_delivered += 1
        self._futures = []
        if failures:
            try:  # start afresh (a lost producer id, a closed connection)
                producer.close(timeout=1)
            finally:
                self._producer = None
            shown = "; ".join(f"record {i}: {why}" for i, why in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise ConnectorError(
                f"KafkaSink failed to deliver {len(failures)} record(s) to topic {self.topic!r}: {shown}{more}"
            )

    def position(self) -> Position:
        """``{"delivered": n}``: records acknowledged by the broker since this sink was created."""
        return {"delivered": self._n_delivered}

    def restore(self, position: Position) -> None:
        """No-op: Kafka cannot discard records; readers de-duplicate on (source, partition, offset)."""

    def close(self) -> None:
        """Flush, then close the producer. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
