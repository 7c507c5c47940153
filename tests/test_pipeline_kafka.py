"""Kill test over a real Kafka-protocol broker: SIGKILL the pipeline, restart, nothing lost or doubled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from online_gmm.demo import DEMO_FIELDS, generate_events
from online_gmm.pipeline import load_model

from _procs import kill_after_progress

ROOT = Path(__file__).resolve().parents[1]
N = 6000


def _produce(servers, topic, lines):
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
    for i, line in enumerate(lines):
        producer.send(topic, line, key=str(i).encode())
    producer.flush()
    producer.close()


def _config(tmp: Path, servers: str, topic: str, group: str, client: str) -> Path:
    cfg = tmp / "cfg.toml"
    cfg.write_text(f"""
[source]
type = "kafka"
topics = "{topic}"
bootstrap_servers = "{servers}"
group_id = "{group}"
fields = {json.dumps(DEMO_FIELDS)}
name = "events"
max_idle_s = 4.0
client = "{client}"
settings = {{ session_timeout_ms = 2000, heartbeat_interval_ms = 400 }}

[model]
n_components = 3
alpha = 1.0
t0 = 0.0
warm_up = 800
random_state = 0

[pipeline]
batch_size = 200

[refit]
every = 2500
candidates = [2, 3, 4]
reservoir_size = 1000
n_init = 1

[checkpoint]
directory = "{tmp / 'ck'}"
every = 400

[sinks.scores]
type = "jsonl"
path = "{tmp / 'scores.jsonl'}"

[sinks.dead_letters]
type = "jsonl"
path = "{tmp / 'dead.jsonl'}"
""")
    return cfg


def _run(cfg, *, kill_after=None, ck_dir=None):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "online_gmm.cli", "run", "--config", str(cfg), "--quiet",
                             "--max-records", str(N)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is None:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return True
    return kill_after_progress(proc, ck_dir, kill_after)   # a seeded moment after progress


def _state(tmp):
    _, meta, parts = load_model(str(tmp / "ck"))
    return parts["model"][0], meta


# each client once, and each partition layout once: the four combinations took 2 minutes of the suite
# (a client's offsets and a layout's bit-for-bit check do not interact)
@pytest.mark.parametrize("partitions, client", [(1, "kafka-python"), (3, "confluent")])
def test_sigkill_over_kafka_counts_every_record_once(kafka_broker, kafka_topic, tmp_path, partitions, client):
    lines, truth = generate_events(N, seed=21)
    n_bad = int(truth["bad"].sum())
    servers = kafka_broker.bootstrap_servers
    topic = kafka_topic(partitions=partitions, prefix="kill")
    _produce(servers, topic, lines)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    _run(_config(ref_dir, servers, topic, f"ref-{topic}", client))
    cfg = _config(run_dir, servers, topic, f"run-{topic}", client)
    rng = np.random.default_rng(7 + partitions)
    kills = sum(_run(cfg, kill_after=d, ck_dir=run_dir / "ck") for d in rng.uniform(0.0, 0.3, size=3))
    _run(cfg)
    assert kills >= 2, "the pipeline finished before it could be killed: the test lost its point"
    ref_arrays, ref_meta = _state(ref_dir)
    arrays, meta = _state(run_dir)
    for m in (ref_meta, meta):
        assert m["counters"]["records"] == N and m["counters"]["good"] == N - n_bad
        assert m["parts"]["parts"]["model"]["n_seen"] == N - n_bad
    np.testing.assert_allclose(arrays["stats.weights"].sum(), N - n_bad, rtol=1e-9)
    scores = [json.loads(l) for l in (run_dir / "scores.jsonl").read_text().splitlines()]
    dead = [json.loads(l) for l in (run_dir / "dead.jsonl").read_text().splitlines()]
    keys = {(r["partition"], r["offset"]) for r in scores}
    assert len(scores) == len(keys) == N - n_bad          # each good record scored exactly once
    assert len(dead) == n_bad
    if partitions == 1:   # one partition has one order: the state is the uninterrupted run's, bit for bit
        for key in ref_arrays:
            np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)
        assert (run_dir / "scores.jsonl").read_bytes() == (ref_dir / "scores.jsonl").read_bytes()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_kafka_source_without_a_group_resumes_from_its_checkpoint(kafka_broker, kafka_topic, tmp_path,
                                                                     client):
    """Without ``group_id`` the source assigns the partitions itself and nothing is committed to the
    broker: the checkpoint alone holds the positions, and a second run goes on from there."""
    from online_gmm.cli import build_pipeline
    from online_gmm.config import parse_config

    lines, truth = generate_events(3000, seed=5)
    n_bad = int(truth["bad"].sum())
    servers = kafka_broker.bootstrap_servers
    topic = kafka_topic(partitions=2, prefix="nogroup")
    _produce(servers, topic, lines)
    raw = {"source": {"type": "kafka", "topics": topic, "bootstrap_servers": servers, "client": client,
                      "fields": list(DEMO_FIELDS), "max_idle_s": 2.0},
           "model": {"n_components": 3, "warm_up": 500, "random_state": 0},
           "checkpoint": {"directory": str(tmp_path / "ck"), "every": 500},
           "sinks": {"scores": {"type": "jsonl", "path": str(tmp_path / "scores.jsonl")}},
           "pipeline": {"batch_size": 250}}
    for max_records in (1700, None):         # the second run goes on until the topic is idle
        pipe = build_pipeline(parse_config(raw))
        assert pipe.source.commits is False
        resumed = pipe.resume()
        assert resumed == (max_records is None)
        try:
            s = pipe.run(max_records=max_records)
        finally:
            pipe.close()
    assert s.records == 3000 and s.good == 3000 - n_bad
    scores = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len({(r["partition"], r["offset"]) for r in scores}) == len(scores) == 3000 - n_bad
