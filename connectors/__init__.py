"""Connectors: sources that turn bytes into validated float arrays with positions, and sinks.

This package knows nothing of Gaussian mixtures and never imports ``online_gmm``.
"""

from connectors.base import Batch, ConnectorError, PositionError, Reject, Sink, Source
from connectors.broker import LocalBroker
from connectors.deadletter import DeadLetterSink
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder, RawArrayDecoder
from connectors.files import CSVSink, CSVSource, JSONLinesSink, JSONLinesSource, ParquetSink, ParquetSource
from connectors.lines import RotationWarning, TruncationWarning
from connectors.kafka import KafkaSink, KafkaSource
from connectors.memory import MemorySink, MemorySource

__all__ = [
    "Batch",
    "ConnectorError",
    "PositionError",
    "Reject",
    "Sink",
    "Source",
    "Decoder",
    "JSONDecoder",
    "CSVDecoder",
    "RawArrayDecoder",
    "CSVSource",
    "JSONLinesSource",
    "ParquetSource",
    "ParquetSink",
    "JSONLinesSink",
    "CSVSink",
    "DeadLetterSink",
    "MemorySource",
    "MemorySink",
    "KafkaSource",
    "KafkaSink",
    "LocalBroker",
    "RotationWarning",
    "TruncationWarning",
]
