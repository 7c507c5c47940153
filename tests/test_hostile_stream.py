"""No record may stop the stream: a hostile stream through ``online-gmm run``, SIGKILLed at random.

The stream mixes good events with every kind of bad and extreme input: garbage, NaN and infinity
literals, 1e308 and -1e308, 1e-320 (a subnormal: good data), records with every field near 1e10,
wrong arity, empty lines, a 10 MB line, unicode garbage and invalid UTF-8.  The job is killed with
SIGKILL at seeded moments and restarted until it finishes.  It must never die on its own, every bad
record must be in the dead letters with a reason, and the final model, scores and dead letters must
equal those of an uninterrupted run over the same stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from online_gmm.demo import DEMO_FIELDS, generate_events
from online_gmm.pipeline import load_model

from _procs import kill_after_progress
from _procs import run_cli as _cli

def _event(values) -> bytes:
    keys = [f.split(".")[1] for f in DEMO_FIELDS]
    return json.dumps({"metrics": dict(zip(keys, values))}).encode()


BAD = {
    "garbage": lambda rng: b"}}{{ not json at all",
    "nan": lambda rng: b'{"metrics": {"latency_ms": NaN, "bytes_kb": 1, "cpu": 0.1, "mem": 0.2}}',
    "inf": lambda rng: b'{"metrics": {"latency_ms": 1, "bytes_kb": Infinity, "cpu": 0.1, "mem": 0.2}}',
    "big": lambda rng: _event([1e308, 40.0, 0.3, 0.4]),
    "minus_big": lambda rng: _event([120.0, -1e308, 0.3, 0.4]),
    "all_1e10": lambda rng: _event(list(rng.uniform(1e10, 3e10, size=4))),
    "arity": lambda rng: b'{"metrics": {"latency_ms": 1, "bytes_kb": 2, "cpu": 0.1}}',
    "text": lambda rng: b'{"metrics": {"latency_ms": "fast", "bytes_kb": 2, "cpu": 0.1, "mem": 0.2}}',
    "unicode": lambda rng: "\u2603\u0000\ufffd{\u00e9".encode(),
    "bad_utf8": lambda rng: b'{"metrics": {"latency_ms": 1, "bytes_kb": 2, "cpu": 0.1, "mem": 0.2, "x": "\xff\xfe"}}',
    "truncated": lambda rng: b'{"metrics": {"latency_ms": 12',
}
#: records a reader must reject (the extreme finite ones may or may not be learnable: they must never
#: stop the job, and if refused they are dead-lettered with a reason)
MUST_REJECT = {"garbage", "nan", "inf", "big", "minus_big", "arity", "text", "unicode", "bad_utf8",
               "truncated", "huge_line"}


def _stream(path: Path, n_good: int = 6000, seed: int = 5) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    lines, _ = generate_events(n=n_good, seed=seed, anomaly_rate=0.0, bad_rate=0.0)
    out: list[bytes] = []
    kinds: dict[str, int] = {}
    for i, line in enumerate(lines):
        out.append(line)
        if i % 25 == 7:
            kind = list(BAD)[int(rng.integers(len(BAD)))]
            out.append(BAD[kind](rng))
            kinds[kind] = kinds.get(kind, 0) + 1
        if i % 97 == 3:
            out.append(b"")                       # empty lines: skipped, not records
        if i % 301 == 5:
            out.append(_event([1e-320, 40.0, 0.3, 0.4]))   # subnormal: a good value
            kinds["subnormal"] = kinds.get("subnormal", 0) + 1
        if i == 2500:
            out.append(b'{"metrics": {"latency_ms": 1, "pad": "' + b"x" * (10 << 20) + b'"}}')
            kinds["huge_line"] = 1
    path.write_bytes(b"\n".join(out) + b"\n")
    return kinds


def _config(folder: Path, data: Path) -> Path:
    cfg = folder / "job.toml"
    cfg.write_text(f"""
[source]
type = "jsonl"
path = "{data}"
fields = {json.dumps(DEMO_FIELDS)}

[model]
n_components = 3
warm_up = 800
random_state = 0

[pipeline]
batch_size = 200

[anomaly]
quantile = 0.99
policy = "adapt"

[refit]
every = 2000
candidates = [2, 3, 4]
reservoir_size = 1000
n_init = 1

[checkpoint]
directory = "ck"
every = 400

[sinks.scores]
type = "jsonl"
path = "scores.jsonl"

[sinks.dead_letters]
type = "jsonl"
path = "dead.jsonl"
""")
    return cfg


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    data = folder / "events.jsonl"
    kinds = _stream(data)
    ref = folder / "ref"
    ref.mkdir()
    proc = _cli("run", "--config", str(_config(ref, data)), "--quiet")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err.decode()
    return data, kinds, ref


def test_uninterrupted_run_quarantines_every_bad_record(hostile):
    data, kinds, ref = hostile
    dead = [json.loads(line) for line in (ref / "dead.jsonl").read_text().splitlines()]
    assert all(d["reason"] for d in dead)
    n_must = sum(v for k, v in kinds.items() if k in MUST_REJECT)
    n_extreme = kinds.get("all_1e10", 0)
    assert n_must <= len(dead) <= n_must + n_extreme
    assert sum(1 for d in dead if "too large" in d["reason"]) >= kinds.get("big", 0) + kinds.get("minus_big", 0)
    _, meta, parts = load_model(str(ref / "ck"))
    c = meta["counters"]
    scores = (ref / "scores.jsonl").read_text().splitlines()
    assert c["rejected"] == len(dead) and c["good"] + c["rejected"] == c["records"]
    assert len(scores) >= c["good"]
    for key, arr in parts["model"][0].items():
        assert np.all(np.isfinite(arr)), key
    # the subnormal values are good data: they were scored, not rejected
    assert kinds["subnormal"] > 0 and not any("1e-320" in d.get("raw", "") for d in dead)


def test_sigkilled_runs_end_equal_to_the_uninterrupted_run(hostile, tmp_path):
    data, kinds, ref = hostile
    cfg = _config(tmp_path, data)
    rng = np.random.default_rng(14)
    kills = 0
    for delay in rng.uniform(0.0, 0.3, size=4):
        proc = _cli("run", "--config", str(cfg), "--quiet")
        kills += kill_after_progress(proc, tmp_path / "ck", float(delay), timeout=300)
        assert proc.returncode in (0, -9), proc.stderr.read().decode() if proc.stderr else ""
    final = _cli("run", "--config", str(cfg), "--quiet")
    out, err = final.communicate(timeout=400)
    assert final.returncode == 0, err.decode()
    assert kills >= 2, "the job finished before it could be killed: the test lost its point"
    for name in ("scores.jsonl", "dead.jsonl"):
        assert (tmp_path / name).read_bytes() == (ref / name).read_bytes(), name
    _, _, parts = load_model(str(tmp_path / "ck"))
    _, _, ref_parts = load_model(str(ref / "ck"))
    for key, arr in ref_parts["model"][0].items():
        np.testing.assert_array_equal(parts["model"][0][key], arr, err_msg=key)
