"""Kafka source and sink, over confluent-kafka (librdkafka) or kafka-python.

:class:`KafkaSource` reads one or more topics in a consumer group and decodes whole polls of records
into columns with a :class:`~connectors.decoders.Decoder`.  Offsets are never auto-committed: the
position of the source is the *next* offset per partition, as JSON data
``{"topic": {"partition": next_offset}}`` (partition numbers as strings), which the caller checkpoints;
:meth:`KafkaSource.seek` restores it (applied as partitions are assigned) and :meth:`KafkaSource.commit`
writes it to the group only when told to, after the state built from those records is durably
checkpointed and the sinks are flushed.

:class:`KafkaSink` writes JSON (or any encoded) records with an idempotent producer (``acks="all"``) and
surfaces every failed delivery in :meth:`KafkaSink.flush`.  It cannot take records back, so on a restore
it keeps what was written and readers de-duplicate on ``(source, partition, offset)``.

Both take ``client="confluent"`` or ``client="kafka-python"``; the default is confluent-kafka when it is
installed (several times faster on both sides, see ``benchmarks/bench_kafka.py``), else kafka-python
with a warning.  ``KafkaSource(...)`` returns the chosen client's subclass; the contract, positions
and checks are the same code for both (:mod:`connectors.kafka._common`).

A dead-letter topic is the shared dead-letter wrapper around a :class:`KafkaSink`; there is no separate
Kafka dead-letter format.
"""

from connectors.kafka._common import (CLIENTS, DEFAULT_CLIENT, KafkaConfigError, KafkaSource,  # noqa: F401
                                      _format_position, _parse_position, check_settings, resolve_client)
from connectors.kafka._encode import ColumnEncoder, json_encoder
from connectors.kafka._sink import KafkaSink

_check_settings = check_settings  # the name the tests and older callers use

__all__ = ["KafkaSource", "KafkaSink", "KafkaConfigError", "json_encoder", "ColumnEncoder", "CLIENTS",
           "DEFAULT_CLIENT", "resolve_client"]
