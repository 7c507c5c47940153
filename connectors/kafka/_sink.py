"""The Kafka sink's contract, shared by both clients: encode (per record or per batch of columns), queue,
report failed deliveries on flush.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Mapping, Sequence

import msgspec

from connectors.base import (
    ConnectorError,
    DictColumn,
    Position,
    Sink,
    records_from_columns,
)
from connectors.kafka._common import KafkaConfigError, _implementation
from connectors.kafka._encode import (
    ColumnEncoder,
    _key_function,
    json_encoder,
    key_column,
)


class KafkaSink(Sink):
    """Write records to a Kafka topic with an idempotent producer.

    Parameters
    ----------
    topic : str
        Destination topic.
    bootstrap_servers : str or list of str
        ``"host:port"`` of one or more brokers.
    encoder : callable or None, default None
        ``encoder(record) -> bytes``; default compact strict JSON (:func:`json_encoder` for
        :meth:`write`, the same output from a columnar msgspec encoder for :meth:`write_columns`).
    key : str, callable or None, default None
        Record key: the name of a field (column) of the record, or ``key(record) -> bytes | str | None``.
    client : {"confluent", "kafka-python"} or None, default None
        As for :class:`KafkaSource`.
    **producer_settings
        Any other setting of the client's producer (kafka-python ``KafkaProducer`` keywords, or
        librdkafka properties, ``_`` standing for ``.``).  ``enable_idempotence=True`` and
        ``acks="all"`` are enforced.

    Notes
    -----
    :meth:`write` and :meth:`write_columns` queue records; :meth:`flush` waits for every
    acknowledgement and raises :class:`ConnectorError` naming the failed records.  After a failure the
    producer is recreated, so a later write works again (e.g. after a broker restart lost the producer
    id).  Kafka cannot take records back: :meth:`restore` keeps what was already written, and readers
    de-duplicate on the ``source``/``partition``/``offset`` fields of each record.
    """

    client_name = "?"

    def __new__(cls, *args: Any, client: str | None = None, **kwargs: Any) -> "KafkaSink":
        if cls is KafkaSink:
            cls = _implementation(client, "Sink")
        return super().__new__(cls)

    def __init__(
        self,
        topic: str,
        bootstrap_servers: str | Sequence[str],
        *,
        encoder: Callable[[Mapping[str, Any]], bytes] | None = None,
        key: str | Callable[[Mapping[str, Any]], Any] | None = None,
        client: str | None = None,
        **producer_settings: Any,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if encoder is not None and not callable(encoder):
            raise TypeError(f"encoder must be a callable(record) -> bytes, got {encoder!r}")
        for name, required in (("enable_idempotence", True), ("acks", "all")):
            for spelled in (name, name.replace("_", ".")):
                if spelled in producer_settings and producer_settings[spelled] not in (required, -1 if name == "acks" else required):
                    raise KafkaConfigError(
                        f"KafkaSink needs {name}={required!r} (idempotent, fully acknowledged writes); "
                        f"got {name}={producer_settings[spelled]!r}"
                    )
        self.topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._custom_encoder = encoder
        self._encode = encoder or json_encoder
        self._columns = ColumnEncoder()
        self._key_name = key if isinstance(key, str) else None
        self._key_callable = callable(key)
        self._key = _key_function(key)
        self._n_written = 0
        self._n_delivered = 0
        self._closed = False
        self._configure(producer_settings)
        self._make_producer()  # fail early on bad settings or an unreachable cluster

    @abc.abstractmethod
    def _configure(self, settings: dict[str, Any]) -> None:
        """Check and keep the producer settings."""

    @abc.abstractmethod
    def _make_producer(self) -> Any:
        """The producer, created if there is none."""

    @abc.abstractmethod
    def _produce(self, values: list[bytes], keys: list[bytes | None] | None) -> None:
        """Queue encoded messages (write indexes ``self._n_written`` onwards)."""

    @abc.abstractmethod
    def _flush_client(self, timeout: float | None) -> tuple[int, list[tuple[Any, str]]]:
        """Wait for acknowledgements: (number delivered, [(record index or description, why)])."""

    @abc.abstractmethod
    def _drop_producer(self, timeout: float) -> None:
        """Close the producer (after a failure, or on close)."""

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue ``records`` (dicts) for delivery; failures surface in :meth:`flush`."""
        self._check_open()
        values, keys = [], []
        for record in records:
            try:
                values.append(self._encode(record))
                keys.append(self._key(record))
            except (TypeError, ValueError) as exc:
                raise ConnectorError(
                    f"KafkaSink cannot encode record {self._n_written + len(values)}: {exc}; record={record!r}"
                ) from exc
        self._send(values, keys if any(k is not None for k in keys) else None)

    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Queue the records ``columns`` stand for, encoded a whole batch at once (msgspec).

        Keys come from the column named by ``key``.  A custom ``encoder`` or a callable ``key`` needs
        one dict per record and goes through :meth:`write`.
        """
        if self._custom_encoder is not None or self._key_callable:
            self.write(records_from_columns(columns))
            return
        self._check_open()
        try:
            values = self._columns.encode(columns)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise ConnectorError(f"KafkaSink cannot encode columns {list(columns)!r}: {exc}") from exc
        keys = None
        if self._key_name is not None and self._key_name in columns:
            col = columns[self._key_name]
            keys = key_column(col if not isinstance(col, DictColumn) else col.tolist())
        self._send(values, keys)

    def _send(self, values: list[bytes], keys: list[bytes | None] | None) -> None:
        if values:
            self._produce(values, keys)
            self._n_written += len(values)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises
        ------
        ConnectorError
            Naming how many and which records (by write index) failed, and why.
        """
        delivered, failures = self._flush_client(timeout)
        self._n_delivered += delivered
        if failures:
            try:  # start afresh (a lost producer id, a closed connection)
                self._drop_producer(1.0)
            except Exception:  # noqa: BLE001 - the delivery failure is the error to report
                pass
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

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"KafkaSink for topic {self.topic!r} is closed")

    def close(self) -> None:
        """Flush, then close the producer. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._drop_producer(5.0)
