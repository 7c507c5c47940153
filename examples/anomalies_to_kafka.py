"""Anomaly flagging: score every event before learning it, send the flagged ones to a Kafka topic.

The threshold is the running 99th percentile of -log p (bounded memory). With ``--policy protect``
flagged events are not learned (the model stays clean); with ``adapt`` they are (it follows drift).
Without ``--bootstrap-servers`` a local broker is started on 127.0.0.1 and stopped at the end.

    python examples/anomalies_to_kafka.py --records 6000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from online_gmm.cli import build_pipeline
from online_gmm.config import parse_config
from online_gmm.demo import DEMO_FIELDS, write_events


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-servers", default=None)
    ap.add_argument("--topic", default="anomalies")
    ap.add_argument("--records", type=int, default=6000)
    ap.add_argument("--policy", choices=["adapt", "protect"], default="protect")
    ap.add_argument("--out", default="anomaly-demo")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = write_events(out / "events.jsonl", n=args.records, seed=11)
    broker = None
    servers = args.bootstrap_servers
    if servers is None:
        from connectors.broker import LocalBroker
        broker = LocalBroker()
        broker.start()
        servers = broker.bootstrap_servers
    try:
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=servers)
        if args.topic not in admin.list_topics():
            admin.create_topics([NewTopic(args.topic, 1, 1)])
        admin.close()
        cfg = parse_config({
            "source": {"type": "jsonl", "path": str(out / "events.jsonl"), "fields": DEMO_FIELDS},
            "model": {"n_components": 3, "halflife": 4000, "warm_up": 1000, "random_state": 0},
            "anomaly": {"quantile": 0.99, "policy": args.policy},
            # a small stream: batches of 500 so the threshold (set from the batches before) moves with it
            "pipeline": {"batch_size": 500},
            "sinks": {"anomalies": {"type": "kafka", "topic": args.topic, "bootstrap_servers": servers}},
        })
        pipe = build_pipeline(cfg)
        try:
            summary = pipe.run()
        finally:
            pipe.close()
        from kafka import KafkaConsumer
        consumer = KafkaConsumer(args.topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                 consumer_timeout_ms=3000, enable_auto_commit=False)
        flagged = [json.loads(m.value) for m in consumer]
        consumer.close()
    finally:
        if broker is not None:
            broker.stop()
    # nothing can be flagged during the warm-up (the first 1000 good events build the first model)
    good_seen = np.cumsum(~truth["bad"])
    scored = good_seen > 1000
    true_lines = {i + 1 for i, a in enumerate(truth["anomaly"] & scored) if a}
    hits = sum(1 for r in flagged if r["line"] in true_lines)
    print(f"{summary.anomalies} events flagged and sent to {args.topic!r} ({len(flagged)} read back); "
          f"{hits} of the {len(true_lines)} injected anomalies after the warm-up among them")
    return {"flagged": flagged, "hits": hits, "injected": len(true_lines), "summary": summary}


if __name__ == "__main__":
    main()
