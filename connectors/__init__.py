"""Connectors: sources that turn bytes into validated float arrays with positions, and sinks.

This package knows nothing of Gaussian mixtures and never imports ``online_gmm``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use, so a job pays only for the connectors it uses (start-up).
_LAZY = {
    "Batch": "connectors.base", "ConnectorError": "connectors.base", "PositionError": "connectors.base",
    "Reject": "connectors.base", "Sink": "connectors.base", "Source": "connectors.base",
    "LocalBroker": "connectors.broker", "DeadLetterSink": "connectors.deadletter",
    "CSVDecoder": "connectors.decoders", "Decoder": "connectors.decoders",
    "JSONDecoder": "connectors.decoders", "RawArrayDecoder": "connectors.decoders",
    "CSVSink": "connectors.sinks", "JSONLinesSink": "connectors.sinks",
    "CSVSource": "connectors.lines", "JSONLinesSource": "connectors.lines",
    "RotationWarning": "connectors.lines", "TruncationWarning": "connectors.lines",
    "ParquetSource": "connectors.parquet", "ParquetSink": "connectors.parquet_sink",
    "KafkaSink": "connectors.kafka", "KafkaSource": "connectors.kafka",
    "MemorySink": "connectors.memory", "MemorySource": "connectors.memory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'connectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
