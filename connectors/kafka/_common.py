"""What both Kafka clients share: client choice, positions, settings checks, the columnar source.

:class:`KafkaSource` here (and :class:`~connectors.kafka._sink.KafkaSink`) hold every rule of the
contract (positions, seek on assignment, commit only when told, lost-offset detection, delivery errors
on flush) and choose an implementation by their ``client`` argument; the client modules supply only
the calls into their library.

Examples
--------
The position format, without a broker:

>>> _parse_position({"events": {"0": 12, "2": 7}})
{('events', 0): 12, ('events', 2): 7}
>>> _format_position({("events", 2): 7, ("events", 0): 12})
{'events': {'0': 12, '2': 7}}
"""

from __future__ import annotations

import abc
import importlib
import math
import time
import warnings
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from connectors.base import (
    constant_column,
    Batch,
    ConnectorError,
    Position,
    PositionError,
    Reject,
    Source,
)

TP = tuple[str, int]

#: The client a source or sink uses when none is named: librdkafka consumed 200 000 small JSON
#: messages 8-10x faster than kafka-python on the local broker (benchmarks/bench_kafka.py).
DEFAULT_CLIENT = "confluent"
CLIENTS = {"kafka-python": "connectors.kafka._kafka_python", "confluent": "connectors.kafka._confluent"}
#: How often (seconds) an idle source re-checks that the topics/partitions it has positions for exist.
EXISTENCE_CHECK_INTERVAL = 2.0
_warned_fallback = False


class KafkaConfigError(ConnectorError, ValueError):
    """An invalid Kafka connector setting (unknown key, forbidden value)."""


def resolve_client(client: str | None) -> str:
    """The client name to use: ``client`` itself, or the default (confluent if installed).

    Raises
    ------
    KafkaConfigError
        If ``client`` is not a known name, or is ``"confluent"`` and confluent-kafka is not installed.
    """
    global _warned_fallback
    if client is not None and client not in CLIENTS:
        raise KafkaConfigError(f"client must be one of {sorted(CLIENTS)!r} or None, got {client!r}")
    name = DEFAULT_CLIENT if client is None else client
    if name == "confluent":
        try:
            importlib.import_module("confluent_kafka")
        except ImportError:
            if client is not None:
                raise KafkaConfigError(
                    "client='confluent' needs confluent-kafka: pip install 'online-gmm[kafka-fast]' "
                    "(or choose client='kafka-python')") from None
            if not _warned_fallback:
                _warned_fallback = True
                warnings.warn("confluent-kafka is not installed: Kafka connectors use kafka-python, "
                              "several times slower; pip install 'online-gmm[kafka-fast]'",
                              RuntimeWarning, stacklevel=3)
            name = "kafka-python"
    return name


def _implementation(client: str | None, kind: str) -> type:
    module = importlib.import_module(CLIENTS[resolve_client(client)])
    return getattr(module, kind)


def check_settings(settings: Mapping[str, Any], allowed: Iterable[str], reserved: Mapping[str, str],
                   owner: str) -> None:
    """Refuse reserved keys (with the reason) and keys ``allowed`` does not hold (naming them)."""
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


def decode_keys(keys: list[Any]) -> np.ndarray:
    """Message keys (bytes or None) as an object column of str (UTF-8, replacement) or None."""
    n = len(keys)
    out = np.empty(n, dtype=object)
    nones = keys.count(None)
    if nones == n:
        return out
    if nones == 0:
        out[:] = list(map(bytes.decode, keys, repeat("utf-8", n), repeat("replace", n)))
    else:
        out[:] = [k.decode("utf-8", "replace") if k is not None else None for k in keys]
    return out


@dataclass
class Polled:
    """What one poll of a client returned, as columns (in the order the client delivered).

    Attributes
    ----------
    values : list of bytes
    topic, partition, offset : ndarray of length n (object, int64, int64)
    keys : list of bytes or None
    groups : list of ((topic, partition), first_offset, last_offset)
        One entry per partition present, with its first and last offset in this poll.
    """

    values: list[bytes]
    topic: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    keys: list[Any]
    groups: list[tuple[TP, int, int]]


def partition_groups(topic: np.ndarray, partition: np.ndarray, offset: np.ndarray) -> list[tuple[TP, int, int]]:
    """First and last offset of every partition in a poll (vectorised; a loop over partitions only)."""
    if not len(offset):
        return []
    t0, p0 = topic[0], int(partition[0])
    if (partition == p0).all() and (topic == t0).all():
        return [((t0, p0), int(offset[0]), int(offset[-1]))]
    out = []
    for t in dict.fromkeys(topic.tolist()):
        in_topic = topic == t
        for p in np.unique(partition[in_topic]).tolist():
            offs = offset[in_topic & (partition == p)]
            out.append(((t, int(p)), int(offs[0]), int(offs[-1])))
    return out


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
        Turns record values (bytes) into rows, a whole poll at a time (``decode_columns`` when the
        decoder has it, else ``decode_many``); see :mod:`connectors.decoders`.
    name : str or None, default None
        The ``source`` field of every record's meta; default ``"kafka:<topics>"``.
    max_idle_s : float or None, default None
        A Kafka source normally never ends (status ``"idle"`` when nothing arrives).  With a number,
        :meth:`read` answers ``"end"`` once no record has arrived for that many seconds while the
        source owns partitions: waiting for the group to assign them (after a crashed member, until
        its session times out) does not count, and every new assignment restarts the clock.
    client : {"confluent", "kafka-python"} or None, default None
        The client library.  ``None``: confluent-kafka (librdkafka) when installed, else kafka-python
        with a warning.
    partitions : list of int or None, default None
        Without a group (``group_id=None``): read only these partitions of each topic (a scaled-out
        job gives each worker its own); a listed partition the topic lacks is a
        :class:`ConnectorError`.  None: every partition.
    **client_settings
        Any other setting of the chosen client, passed through: kafka-python's ``KafkaConsumer``
        keywords, or librdkafka properties for confluent-kafka (``_`` may stand for ``.``, so
        ``session_timeout_ms`` works with both).  ``enable_auto_commit`` must stay ``False``; defaults
        changed here: ``auto_offset_reset="earliest"``, no auto-created topics.

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

    client_name = "?"

    def __new__(cls, *args: Any, client: str | None = None, **kwargs: Any) -> "KafkaSource":
        if cls is KafkaSource:
            cls = _implementation(client, "Source")
        return super().__new__(cls)

    def __init__(
        self,
        topics: str | Sequence[str],
        bootstrap_servers: str | Sequence[str],
        group_id: str | None,
        decoder: Any,
        *,
        name: str | None = None,
        max_idle_s: float | None = None,
        client: str | None = None,
        partitions: Sequence[int] | None = None,
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
        if partitions is not None:
            if group_id is not None:
                raise ValueError("partitions= reads the listed partitions without a group: give "
                                 f"group_id=None, got group_id={group_id!r}")
            if isinstance(partitions, (str, bytes)) or not partitions or not all(
                    isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in partitions):
                raise ValueError(f"partitions must be a non-empty list of partition numbers, got {partitions!r}")
        for key in ("enable_auto_commit", "enable.auto.commit"):
            if client_settings.get(key, False) is not False:
                raise KafkaConfigError(
                    "enable_auto_commit must be False for KafkaSource: offsets are committed only by "
                    f"KafkaSource.commit() after a checkpoint; got {client_settings[key]!r}"
                )
        self.topics = topic_list
        self.group_id = group_id
        self.partitions = None if partitions is None else sorted(set(partitions))
        self.commits = group_id is not None
        self.decoder = decoder
        self.name = name if name is not None else "kafka:" + ",".join(topic_list)
        self.max_idle_s = max_idle_s
        self._pending: dict[TP, int] = {}  # seeked, waiting for assignment
        self._positions: dict[TP, int] = {}  # owned partitions: next offset to return
        self._floor: dict[TP, int] = {}  # highest offset ever known per partition: the log must reach it
        self._stale_hw: dict[TP, int | None] = {}  # highwater seen before an in-place seek
        self._assigned_once = False
        self._last_record = time.monotonic()
        self._last_existence_check = 0.0
        self._closed = True  # until the client is open
        self._open(bootstrap_servers, client_settings)
        self._closed = False

    # ------------------------------------------------------------------ what a client supplies
    @abc.abstractmethod
    def _open(self, bootstrap_servers: Any, settings: dict[str, Any]) -> None:
        """Create the consumer; assign every partition (no group) or subscribe (group)."""

    @abc.abstractmethod
    def _poll(self, max_records: int, timeout: float) -> Polled | None:
        """At most ``max_records`` messages, waiting at most ``timeout`` s for the first."""

    @abc.abstractmethod
    def _assigned(self) -> set[TP]:
        """The partitions the client owns now."""

    @abc.abstractmethod
    def _seek_client(self, key: TP, offset: int) -> None:
        """Move an owned partition's fetch position."""

    @abc.abstractmethod
    def _highwater(self, key: TP) -> int | None:
        """The high-water mark last seen in a fetch response (no ListOffsets: broken on Tansu)."""

    @abc.abstractmethod
    def _partitions_for(self, topic: str) -> set[int] | None:
        """The topic's partitions from fresh metadata (empty/None: no such topic)."""

    @abc.abstractmethod
    def _commit_client(self, offsets: dict[TP, int]) -> None:
        """Commit next offsets synchronously; raise ConnectorError on failure."""

    @abc.abstractmethod
    def _client_positions(self, keys: list[TP]) -> dict[TP, int]:
        """The client's resolved next offset of owned partitions nothing was read from (no network)."""

    @abc.abstractmethod
    def _close_client(self) -> None:
        """Close without committing."""

    # ------------------------------------------------------------------ rebalance callbacks
    def _on_revoked(self, revoked: Iterable[TP]) -> None:
        for key in revoked:
            self._positions.pop(key, None)
            self._stale_hw.pop(key, None)

    def _on_assigned(self, owned: set[TP]) -> dict[TP, int]:
        """Record the new assignment; returns the saved offsets the client must start these at."""
        start = {}
        for key in owned:
            if key in self._pending:
                start[key] = self._positions[key] = self._pending.pop(key)
        for key in list(self._pending):  # offsets for partitions another member owns
            if key not in owned:
                del self._pending[key]
        self._assigned_once = True
        self._last_record = time.monotonic()   # the idle clock starts with the assignment
        return start

    # ------------------------------------------------------------------ Source API
    def _select(self, topic: str, existing: Iterable[int], servers: Any) -> list[int]:
        """The partitions of ``topic`` to assign without a group: all, or those of ``partitions``."""
        existing = sorted(existing)
        if self.partitions is None:
            return existing
        missing = sorted(set(self.partitions) - set(existing))
        if missing:
            self._close_client()
            raise ConnectorError(f"topic {topic!r} on {servers!r} has no partition(s) {missing!r}; "
                                 f"it has {existing!r}")
        return list(self.partitions)

    def assignment(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this member currently owns, sorted."""
        self._check_open()
        return sorted(self._assigned())

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the end of each owned partition, ``{(topic, partition): lag}``.

        The lag is the partition's high-water mark from the last fetch response minus the next offset
        this source will return (no request is made: ListOffsets is not trusted, see
        ``_highwater``).  Partitions with no fetch response yet, or no position, are left out.
        """
        self._check_open()
        out = {}
        for key in sorted(self._assigned()):
            hw, pos = self._highwater(key), self._positions.get(key)
            if hw is not None and pos is not None and key not in self._stale_hw:
                out[key] = max(int(hw) - int(pos), 0)
        return out

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
        assigned = self._assigned()
        for key, offset in parsed.items():
            self._floor[key] = max(self._floor.get(key, 0), offset)
            if key in assigned:
                self._stale_hw[key] = self._highwater(key)
                self._seek_client(key, offset)
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
        owned = self._assigned()
        to_commit = {key: offset for key, offset in offsets.items() if key in owned}
        if to_commit:
            self._commit_client(to_commit)

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Poll at most ``max_records`` records, waiting at most ``timeout`` seconds, and decode them.

        Returns
        -------
        Batch
            Status ``"records"`` or ``"idle"`` (``"end"`` only with ``max_idle_s``).  Columns of the
            good records: ``source``, ``topic``, ``partition`` (int64), ``offset`` (int64), ``key``,
            then any the decoder carries; each reject's meta has the first five.

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
        polled = self._poll(int(max_records), float(timeout))
        if polled is not None:
            for key, first, last in polled.groups:
                expected = self._positions.get(key)
                if expected is not None and first < expected:
                    hw = self._highwater(key)
                    floor = max(expected, self._floor.get(key, 0))
                    why = (f"its high-water mark is {hw}" if hw is not None and hw < floor
                           else f"the client was reset back to offset {first}")
                    self._position_lost(key, expected, why)
                self._positions[key] = last + 1
                self._stale_hw.pop(key, None)
                if last + 1 > self._floor.get(key, 0):
                    self._floor[key] = last + 1
        self._adopt_client_positions()
        self._check_highwater()

        now = time.monotonic()
        if polled is None or not polled.values:
            if now - self._last_existence_check > EXISTENCE_CHECK_INTERVAL:
                self._last_existence_check = now
                self._check_existence()
            status = "idle"
            if not self._assigned():
                self._last_record = now    # nothing owned yet: waiting for the group is not idleness
            elif self.max_idle_s is not None and now - self._last_record >= self.max_idle_s:
                status = "end"
            return Batch(np.empty((0, self._n_features())), {}, [], self.position(), status)
        self._last_record = now
        return self._decode(polled)

    def _decode(self, polled: Polled) -> Batch:
        raws = polled.values
        decode_columns = getattr(self.decoder, "decode_columns", None)
        if decode_columns is not None:
            X, good, bad, carried = decode_columns(raws)
        else:
            X, good, bad = self.decoder.decode_many(raws)
            carried = {}
        good = np.asarray(good, dtype=np.intp)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            X = X.reshape(len(good), -1)
        keys = decode_keys(polled.keys)
        n = len(raws)
        all_good = len(good) == n
        pick = (lambda col: col) if all_good else (lambda col: col[good])
        columns = {
            "source": constant_column(self.name, len(good)),
            "topic": pick(polled.topic),
            "partition": pick(polled.partition),
            "offset": pick(polled.offset),
            "key": pick(keys),
            **carried,
        }
        rejects = []
        for i, reason in bad:
            meta = {"source": self.name, "topic": polled.topic[i], "partition": int(polled.partition[i]),
                    "offset": int(polled.offset[i]), "key": keys[i]}
            rejects.append(Reject(reason, raws[i], meta))
        return Batch(X, columns, rejects, self.position(), "records")

    def close(self) -> None:
        """Leave the group and close the connections without committing. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_client()
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
        keys = [k for k in self._assigned() if k not in self._positions and k not in self._pending]
        if keys:
            self._positions.update(self._client_positions(keys))

    def _check_highwater(self) -> None:
        # a partition's high-water mark never decreases in a healthy log
        for key in self._assigned():
            hw = self._highwater(key)
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
        by_topic: dict[str, set[int]] = {}
        for topic, partition in keys:
            by_topic.setdefault(topic, set()).add(partition)
        for topic, partitions in sorted(by_topic.items()):
            existing = self._partitions_for(topic)
            missing = sorted(partitions - set(existing or ()))
            if missing:
                key = (topic, missing[0])
                offset = self._pending.get(key, self._floor.get(key, 0))
                why = ("the topic does not exist" if not existing else
                       f"the topic has partitions {sorted(existing)!r}")
                self._position_lost(key, offset, why)
