"""The job that ``online-gmm demo`` runs: its configuration, its local Kafka broker (``--kafka``) and
the check of its anomaly flags against the generator's truth.

Kept apart from :mod:`online_gmm.cli` (which stays a thin layer of commands); imported only by the
``demo`` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["demo_config", "demo_broker", "injected_anomalies_caught"]


def demo_config(out: Path, *, kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's configuration: the bundled event stream, file sinks under ``out``."""
    from online_gmm.config import parse_config
    from online_gmm.demo import DEMO_FIELDS, demo_events_path

    source: dict[str, Any] = {"type": "jsonl", "path": str(demo_events_path()), "fields": DEMO_FIELDS,
                              "name": "events"}
    sinks: dict[str, Any] = {
        "scores": {"type": "jsonl", "path": str(out / "scores.jsonl")},
        "anomalies": {"type": "jsonl", "path": str(out / "anomalies.jsonl")},
        "dead_letters": {"type": "jsonl", "path": str(out / "dead_letters.jsonl")},
    }
    if kafka is not None:
        source = {"type": "kafka", "topics": kafka["topic"], "bootstrap_servers": kafka["servers"],
                  "group_id": "online-gmm-demo", "fields": DEMO_FIELDS, "name": "events",
                  "max_idle_s": 3.0,
                  "settings": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400}}
        sinks["anomalies"] = {"type": "kafka", "topic": kafka["anomaly_topic"],
                              "bootstrap_servers": kafka["servers"]}
    return parse_config({
        "source": source,
        "model": {"n_components": 3, "covariance_type": "full", "halflife": 4000, "random_state": 0,
                  "warm_up": 1000},
        "pipeline": {"batch_size": 500},
        "anomaly": {"quantile": 0.99, "policy": "protect"},
        "refit": {"every": 2500, "reservoir_size": 3000, "mode": "window", "candidates": [2, 3, 4, 5, 6],
                  "n_init": 2, "seed": 0},
        "checkpoint": {"directory": str(out / "checkpoints"), "every": 2500},
        "sinks": sinks,
    })




def injected_anomalies_caught(scores: Path) -> tuple[int, int, int, int] | None:
    """``(flagged, injected, injected and flagged, scored)`` from the demo's scores and the generator's
    truth (the bundled file is ``generate_events()`` with its defaults); None if it cannot be told."""
    import json

    import numpy as np

    from online_gmm.demo import generate_events

    try:
        records = [json.loads(line) for line in scores.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    _, truth = generate_events()
    index, flags = [], []
    for r in records:
        if "line" in r:
            index.append(int(r["line"]) - 1)     # file source: 1-based line numbers
        elif "offset" in r:
            index.append(int(r["offset"]))       # one-partition topic: 0-based offsets
        else:
            return None
        flags.append(bool(r.get("anomaly")))
    index_arr, flag_arr = np.asarray(index, dtype=np.int64), np.asarray(flags, dtype=bool)
    if index_arr.size and (index_arr.min() < 0 or index_arr.max() >= truth["anomaly"].size):
        return None
    injected = truth["anomaly"]
    return (int(flag_arr.sum()), int(injected.sum()), int((flag_arr & injected[index_arr]).sum()),
            len(records))


def demo_broker() -> tuple[Any, dict[str, str]]:
    """Start a local broker, create the demo's topics and produce the bundled events to it.

    Returns
    -------
    broker : connectors.broker.LocalBroker
        Started; the caller stops it. It is stopped here if anything after its start fails.
    settings : dict
        ``servers``, ``topic`` and ``anomaly_topic``.
    """
    import gzip

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.broker import LocalBroker
    from online_gmm.demo import demo_events_path

    broker = LocalBroker()
    broker.start()
    try:
        servers = broker.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=servers)
        topic, anomaly_topic = "events", "anomalies"
        admin.create_topics([NewTopic(topic, 1, 1), NewTopic(anomaly_topic, 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
        with gzip.open(demo_events_path(), "rb") as fh:
            for line in fh:
                producer.send(topic, line.rstrip(b"\n"))
        producer.flush()
        producer.close()
    except BaseException:
        broker.stop()
        raise
    click.echo(f"local broker on {servers}: produced the demo events to topic {topic!r}")
    return broker, {"servers": servers, "topic": topic, "anomaly_topic": anomaly_topic}
