"""The partitions of a scaled-out job's input, their output paths and their consumer lag."""

from __future__ import annotations

import glob as _glob
from pathlib import Path
from typing import Any

__all__ = ["partition_path", "partitions_of", "PartitionLags"]


def partition_path(path: str, tag: str) -> str:
    """A partition's own output path: ``out/scores.jsonl`` -> ``out/scores.part-0003.jsonl``.

    >>> partition_path("out/scores.jsonl", "part-0003")
    'out/scores.part-0003.jsonl'
    >>> partition_path("out/scores", "part-0000")
    'out/scores.part-0000'
    """
    p = Path(path)
    if p.suffix:
        return str(p.with_name(f"{p.stem}.{tag}{p.suffix}"))
    return str(p.with_name(f"{p.name}.{tag}"))


def partitions_of(source_cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The partitions of a ``[source]`` table: ``[(identity, source table of the partition)]``.

    Kafka: every partition of every topic (read without a group); files: every file the paths or
    globs name, in order.
    """
    if source_cfg["type"] == "kafka":
        from connectors.decoders import JSONDecoder
        from connectors.kafka import KafkaSource
        probe = KafkaSource(source_cfg["topics"], source_cfg["bootstrap_servers"], None,
                            JSONDecoder(source_cfg["fields"]), client=source_cfg["client"],
                            partitions=source_cfg.get("partitions"), **dict(source_cfg["settings"]))
        try:
            owned = sorted(probe.assignment())
        finally:
            probe.close()
        return [(f"kafka:{topic}/{part}", {**source_cfg, "topics": [topic], "group_id": None,
                                            "partitions": [part]}) for topic, part in owned]
    paths = source_cfg["path"] if isinstance(source_cfg["path"], list) else [source_cfg["path"]]
    files: list[str] = []
    for p in paths:
        found = sorted(_glob.glob(p)) if _glob.has_magic(p) else [p]
        files += [f for f in found if f not in files]
    if not files:
        raise ValueError(f"[source] path {source_cfg['path']!r} names no file")
    return [(f"file:{f}", {**source_cfg, "path": f}) for f in files]


class PartitionLags:
    """The consumer lag of each Kafka partition as its last round's task saw it (the coordinator
    reads no partition itself)."""

    def __init__(self) -> None:
        self._lag: dict[tuple[str, int], int] = {}

    def update(self, lag: dict[tuple[str, int], int]) -> None:
        self._lag.update({(str(t), int(p)): int(n) for (t, p), n in lag.items()})

    def lag(self) -> dict[tuple[str, int], int]:
        """``{(topic, partition): records behind the partition's end}``."""
        return dict(self._lag)
