"""The pipeline: exactly-once resume (in process and across SIGKILL), corruption, bad input, drift."""

import json
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from connectors.base import ConnectorError
from connectors.deadletter import DeadLetterSink
from connectors.files import JSONLinesSink, JSONLinesSource
from online_gmm import OnlineGaussianMixture
from online_gmm.checkpoint import CheckpointError, CheckpointStore
from online_gmm.config import ConfigError, load_config, parse_config
from online_gmm.demo import DEMO_FIELDS, write_events
from online_gmm.pipeline import Pipeline, load_model

from _procs import kill_after_progress, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(tmp, data, *, ck="ck", scores="scores.jsonl", batch_size=250, refit_every=3000, **model):
    model = {"n_components": 3, "alpha": 1.0, "t0": 0.0, "warm_up": 1000, "random_state": 0, **model}
    return Pipeline(
        JSONLinesSource(str(data), fields=DEMO_FIELDS, name="events"), OnlineGaussianMixture(**model),
        batch_size=batch_size, scores=JSONLinesSink(str(tmp / scores)),
        dead_letters=DeadLetterSink(JSONLinesSink(str(tmp / f"{scores}.dead"))),
        refit_every=refit_every, refit_candidates=[2, 3, 4], reservoir_size=1500, refit_n_init=1,
        checkpoint_dir=str(tmp / ck), checkpoint_every=1000, feature_names=DEMO_FIELDS)


def _final_arrays(pipe):
    arrays, _ = pipe.online.to_arrays()
    return arrays


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "events.jsonl"
    truth = write_events(path, n=8000, seed=3)
    return path, truth


def test_run_counts_outputs_and_dead_letters(tmp_path, events):
    path, truth = events
    pipe = _pipeline(tmp_path, path)
    s = pipe.run()
    pipe.close()
    n_bad = int(truth["bad"].sum())
    assert (s.records, s.rejected, s.good) == (8000, n_bad, 8000 - n_bad)
    assert pipe.online.n_seen == s.good == s.learned
    np.testing.assert_allclose(pipe.online.stats.total_weight, s.good, rtol=1e-9)
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert len(lines) == s.good
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first["warming_up"] is True and first["cluster"] is None
    assert isinstance(last["cluster"], int) and last["log_likelihood"] < 0 or last["log_likelihood"] >= 0
    dead = [json.loads(x) for x in (tmp_path / "scores.jsonl.dead").read_text().splitlines()]
    assert len(dead) == n_bad
    assert all(d["reason"] and "line" in d for d in dead)
    assert s.refits == 8000 // 3000


def test_bad_records_leave_the_state_of_the_clean_stream(tmp_path, events):
    path, truth = events
    clean = tmp_path / "clean.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    clean.write_bytes(b"".join(l for l, bad in zip(lines, truth["bad"]) if not bad))
    a = _pipeline(tmp_path, path, ck="a")
    a.run()
    b = _pipeline(tmp_path, clean, ck="b", scores="clean_scores.jsonl")
    b.run()
    for key, arr in _final_arrays(a).items():
        np.testing.assert_array_equal(arr, _final_arrays(b)[key], err_msg=key)
    assert a.summary.rejected == int(truth["bad"].sum()) and b.summary.rejected == 0


def test_resume_in_process_is_exact(tmp_path, events):
    path, _ = events
    ref = _pipeline(tmp_path, path, ck="ref", scores="ref.jsonl")
    ref.run()
    first = _pipeline(tmp_path, path, ck="ck")
    first.run(max_records=3333)
    first.close()
    second = _pipeline(tmp_path, path, ck="ck")
    s = second.run()
    assert s.resumed_from is not None
    for key, arr in _final_arrays(ref).items():
        np.testing.assert_array_equal(arr, _final_arrays(second)[key], err_msg=key)
    assert (tmp_path / "scores.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    assert second.history.to_arrays()[1] is not None and len(second.history) == len(ref.history)


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path, events):
    path, _ = events
    ref = _pipeline(tmp_path, path, ck="ref", scores="ref.jsonl")
    ref.run()
    first = _pipeline(tmp_path, path)
    first.run(max_records=5200)
    first.close()
    store = CheckpointStore(tmp_path / "ck")
    newest = store.checkpoints()[-1][1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    second = _pipeline(tmp_path, path)
    with pytest.warns(UserWarning, match=newest.name):
        second.run()
    for key, arr in _final_arrays(ref).items():
        np.testing.assert_array_equal(arr, _final_arrays(second)[key], err_msg=key)
    assert (tmp_path / "scores.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    # every checkpoint unusable: a clear error, not a silent fresh start
    for _, p in store.checkpoints():
        p.write_bytes(p.read_bytes()[:100])
    third = _pipeline(tmp_path, path)
    with pytest.raises(CheckpointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third.run()


def test_drift_bic_history_and_halflife_tracking(tmp_path):
    """The demo stream: one cluster splits half-way; BIC moves from 3 to 4, the model follows."""
    path = tmp_path / "drift.jsonl"
    write_events(path, n=16000, seed=5, anomaly_rate=0.0)
    pipe = Pipeline(JSONLinesSource(str(path), fields=DEMO_FIELDS),
                    OnlineGaussianMixture(3, halflife=3000, warm_up=1000, random_state=0),
                    batch_size=500, refit_every=2000, refit_candidates=[2, 3, 4, 5], reservoir_size=2000,
                    reservoir_mode="window", refit_n_init=2)
    pipe.run()
    chosen = [row["chosen_k"] for row in pipe.history]
    assert chosen[: len(chosen) // 2 - 1].count(3) >= 2, chosen
    assert chosen[-3:] == [4, 4, 4], chosen
    from online_gmm.demo import _AFTER
    means = pipe.online.params.means
    # every cluster of the new regime has a component within 10% of its latency/bytes centre
    for centre in _AFTER:
        rel = np.abs(means[:, :2] - centre[:2]) / centre[:2]
        assert rel.max(axis=1).min() < 0.1, (centre, means)


# --------------------------------------------------------------------------------------- SIGKILL
def _write_config(tmp: Path, data: Path, *, source_extra: str = "", name="cfg.toml", ck_every: int = 600,
                  sinks_extra: str = "") -> Path:
    cfg = tmp / name
    cfg.write_text(f"""
[source]
type = "jsonl"
path = "{data}"
fields = {json.dumps(DEMO_FIELDS)}
name = "events"
{source_extra}

[model]
n_components = 3
alpha = 1.0
t0 = 0.0
warm_up = 1000
random_state = 0

[pipeline]
batch_size = 200

[anomaly]
quantile = 0.99
policy = "adapt"

[refit]
every = 4000
candidates = [2, 3, 4]
reservoir_size = 1500
n_init = 1

[checkpoint]
directory = "{tmp / 'ck'}"
every = {ck_every}

[sinks.scores]
type = "jsonl"
path = "{tmp / 'scores.jsonl'}"

[sinks.dead_letters]
type = "jsonl"
path = "{tmp / 'dead.jsonl'}"
{sinks_extra}
""")
    return cfg


_cli = run_cli


def _model_arrays(ck_dir):
    _, meta, parts = load_model(str(ck_dir))
    return parts["model"][0], meta


def test_sigkill_three_times_equals_uninterrupted_run(tmp_path, events):
    path, truth = events
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    ref = _cli("run", "--config", str(_write_config(ref_dir, path)), "--quiet")
    assert ref.wait(timeout=240) == 0, ref.stderr.read().decode()
    rng = np.random.default_rng(2026)
    cfg = _write_config(run_dir, path)
    kills = 0
    for delay in rng.uniform(0.0, 0.25, size=3):
        proc = _cli("run", "--config", str(cfg), "--quiet")
        kills += kill_after_progress(proc, run_dir / "ck", delay)   # a seeded moment after progress
    final = _cli("run", "--config", str(cfg), "--quiet")
    out, err = final.communicate(timeout=240)
    assert final.returncode == 0, err.decode()
    assert kills >= 2, "the pipeline finished before it could be killed: the test lost its point"
    ref_arrays, ref_meta = _model_arrays(ref_dir / "ck")
    arrays, meta = _model_arrays(run_dir / "ck")
    assert sorted(arrays) == sorted(ref_arrays)
    for key in ref_arrays:
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)
    n_good = 8000 - int(truth["bad"].sum())
    assert meta["counters"]["good"] == n_good and meta["counters"]["records"] == 8000
    assert meta["parts"]["parts"]["model"]["n_seen"] == n_good
    np.testing.assert_allclose(arrays["stats.weights"].sum(), n_good, rtol=1e-9)
    # outputs: every good record scored exactly once, byte-identical to the uninterrupted run
    assert (run_dir / "scores.jsonl").read_bytes() == (ref_dir / "scores.jsonl").read_bytes()
    assert (run_dir / "dead.jsonl").read_bytes() == (ref_dir / "dead.jsonl").read_bytes()


def _newest_counters(ck_dir: Path) -> dict:
    """The counters of the newest readable checkpoint ({} if none yet); safe while a job writes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # a file removed by retention between list and read
            loaded = CheckpointStore(ck_dir).load_latest() if ck_dir.is_dir() else None
    except CheckpointError:
        return {}
    return {} if loaded is None else loaded[1]["counters"]


def _wait_for(predicate, timeout: float = 120.0, what: str = "the event"):
    """Poll ``predicate`` until it is true (an event, not a guess at how long things take)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigterm_finishes_batch_checkpoints_and_exits_zero(tmp_path):
    """Follow mode, SIGTERM while a partial batch waits for more: it is processed, checkpointed, exit 0.

    The file holds 8 050 good records: 40 full batches of 200, each checkpointed, then 50 that wait.
    The test waits for the checkpoint at record 8 000 (an event), not for a guessed time.
    """
    path = tmp_path / "clean.jsonl"
    write_events(path, n=8050, seed=3, bad_rate=0.0)
    cfg = _write_config(tmp_path, path, source_extra="follow = true", ck_every=200)
    proc = _cli("run", "--config", str(cfg))
    try:
        _wait_for(lambda: _newest_counters(tmp_path / "ck").get("records", 0) >= 8000 or
                  proc.poll() is not None, what="the checkpoint after the last full batch")
        assert proc.poll() is None, proc.communicate()[1].decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "stopped by signal" in out.decode()
    _, meta = _model_arrays(tmp_path / "ck")
    assert meta["counters"]["records"] == 8050      # the partial batch was finished, not dropped


# ------------------------------------------------------------------------- fresh starts, one writer
_CSV_ANOMALIES = """
[sinks.anomalies]
type = "csv"
path = "{path}"
fields = ["line", "log_likelihood"]
"""


def _outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("scores.jsonl", "dead.jsonl", "anomalies.csv")}


def test_killed_before_its_first_checkpoint_leaves_no_doubled_output(tmp_path, events):
    """Issue 14.1: SIGKILL before the first checkpoint (plus a torn line, as a full disk leaves), then
    a fresh start; and again after the checkpoints were deleted. Every sink (JSON lines, dead letters, CSV with its header) must end
    byte-identical to an uninterrupted run's, not hold the first attempt's lines twice."""
    path, _ = events
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()

    def config(folder: Path) -> Path:     # no checkpoint before the end of the stream
        return _write_config(folder, path, ck_every=100_000,
                             sinks_extra=_CSV_ANOMALIES.format(path=folder / "anomalies.csv"))

    ref = _cli("run", "--config", str(config(ref_dir)), "--quiet")
    assert ref.wait(timeout=240) == 0, ref.stderr.read().decode()
    expected = _outputs(ref_dir)
    cfg = config(run_dir)
    proc = _cli("run", "--config", str(cfg), "--quiet")
    scores = run_dir / "scores.jsonl"
    _wait_for(lambda: proc.poll() is not None or (scores.exists() and scores.stat().st_size > 0),
              what="the first score lines")
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert killed, "the run finished before it could be killed: the test lost its point"
    assert not list((run_dir / "ck").glob("ckpt-*.npz")) and scores.stat().st_size > 0
    with open(scores, "ab") as fh:     # what a full disk leaves: a torn last line
        fh.write(b'{"source": "events", "line": 12')
    again = _cli("run", "--config", str(cfg), "--quiet")
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err.decode()
    assert "resumed from" not in out.decode()              # a fresh start, not a resume
    assert _outputs(run_dir) == expected
    # the checkpoints deleted by hand: the next fresh start still begins the outputs afresh
    for ckpt in (run_dir / "ck").glob("ckpt-*.npz"):
        ckpt.unlink()
    third = _cli("run", "--config", str(cfg), "--quiet")
    assert third.wait(timeout=240) == 0, third.stderr.read().decode()
    assert _outputs(run_dir) == expected


def test_a_second_run_on_the_same_checkpoint_directory_refuses(tmp_path, events):
    """Issue 14.9: while a job runs, a second `run` on its checkpoint directory refuses with one
    line (exit 2) and touches nothing; once the first is SIGKILLed its lock is gone and the job
    resumes to outputs identical to an uninterrupted run's."""
    path, _ = events
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref = _cli("run", "--config", str(_write_config(ref_dir, path)), "--quiet")
    assert ref.wait(timeout=240) == 0, ref.stderr.read().decode()
    following = _write_config(tmp_path, path, source_extra="follow = true", name="follow.toml")
    cfg = _write_config(tmp_path, path)                   # the same checkpoints and sinks
    first = _cli("run", "--config", str(following), "--quiet")
    try:
        _wait_for(lambda: first.poll() is not None or any((tmp_path / "ck").glob("ckpt-*.npz")),
                  what="the first job's first checkpoint")
        assert first.poll() is None, first.communicate()[1].decode()
        second = _cli("run", "--config", str(cfg), "--quiet")
        out, err = second.communicate(timeout=240)
        assert first.poll() is None                      # the first job was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert second.returncode == 2, (out.decode(), err.decode())
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"in use by another process (pid {first.pid})" in lines[0], lines
    third = _cli("run", "--config", str(cfg), "--quiet")
    out, err = third.communicate(timeout=240)
    assert third.returncode == 0, err.decode()
    for name in ("scores.jsonl", "dead.jsonl"):
        assert (tmp_path / name).read_bytes() == (ref_dir / name).read_bytes(), name


# --------------------------------------------------------------------------------------- config
def test_config_rejects_unknown_keys_with_their_names(tmp_path):
    base = {"source": {"type": "jsonl", "path": "x", "fields": ["a"]}}
    with pytest.raises(ConfigError, match="'colour'"):
        parse_config({**base, "colour": 1})
    with pytest.raises(ConfigError, match=r"\[model\].*'n_component'"):
        parse_config({**base, "model": {"n_component": 3}})
    with pytest.raises(ConfigError, match=r"\[sinks.scores\].*'pth'"):
        parse_config({**base, "sinks": {"scores": {"type": "jsonl", "pth": "x"}}})
    with pytest.raises(ConfigError, match="policy"):
        parse_config({**base, "anomaly": {"policy": "ignore"}})
    with pytest.raises(ConfigError, match="needs 'path'"):
        parse_config({"source": {"type": "csv"}})
    cfg_file = tmp_path / "p.toml"
    cfg_file.write_text('[source]\ntype = "jsonl"\npath = "data/x.jsonl"\nfields = ["a"]\n')
    assert load_config(cfg_file)["source"]["path"] == str(tmp_path / "data" / "x.jsonl")
    cfg_file.write_text("[source\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(cfg_file)


def test_resume_refuses_a_changed_model_but_not_a_changed_stop(tmp_path, events):
    from online_gmm.cli import build_pipeline
    path, _ = events
    base = {"source": {"type": "jsonl", "path": str(path), "fields": DEMO_FIELDS},
            "model": {"n_components": 3, "warm_up": 500, "random_state": 0},
            "checkpoint": {"directory": str(tmp_path / "ck"), "every": 500}}
    first = build_pipeline(parse_config(base))
    first.run(max_records=1500)
    first.close()
    later = build_pipeline(parse_config({**base, "pipeline": {"max_records": 3000, "features": False}}))
    assert later.run(max_records=3000).resumed_from is not None
    later.close()
    changed = build_pipeline(parse_config({**base, "model": {**base["model"], "n_components": 4}}))
    with pytest.raises(ValueError, match="different model/pipeline configuration"):
        changed.run()


# ------------------------------------------------------------------------- cadence and idle timeout
def test_heavy_share_of_bad_records_keeps_refits_and_scores_of_the_clean_stream(tmp_path):
    """Refit and checkpoint cadences count good records: with 14% bad lines mixed in, refits land on
    the same good records and every score row equals the clean stream's (positions aside)."""
    clean, dirty = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    lines, _ = __import__("online_gmm.demo", fromlist=["generate_events"]).generate_events(
        n=12000, seed=9, anomaly_rate=0.0, bad_rate=0.0)
    rng = np.random.default_rng(1)
    mixed = []
    for line in lines:
        mixed.append(line)
        if rng.random() < 0.16:
            mixed.append(b'{"metrics": {"latency_ms": "n/a"}}')
    clean.write_bytes(b"\n".join(lines) + b"\n")
    dirty.write_bytes(b"\n".join(mixed) + b"\n")
    runs = {}
    for name, path in (("clean", clean), ("dirty", dirty)):
        pipe = _pipeline(tmp_path, path, ck=f"ck-{name}", scores=f"{name}-scores.jsonl", refit_every=5000)
        s = pipe.run()
        pipe.close()
        rows = [json.loads(x) for x in (tmp_path / f"{name}-scores.jsonl").read_text().splitlines()]
        runs[name] = (s, [{k: v for k, v in r.items() if k not in ("file", "line", "offset")} for r in rows],
                      [row["n_seen"] for row in pipe.history])
    (cs, crows, chist), (ds, drows, dhist) = runs["clean"], runs["dirty"]
    assert ds.rejected > 0.12 * ds.records and cs.rejected == 0
    assert chist == dhist == [5000, 10000]
    assert drows == crows
    assert ds.refits == cs.refits == 2 and ds.checkpoints == cs.checkpoints


def test_idle_timeout_stops_a_followed_run_with_a_partial_last_batch(tmp_path):
    """Follow mode, 2 750 records and batches of 500: the last 250 are processed and the run stops
    once the file has been idle for --idle-timeout seconds."""
    data = tmp_path / "events.jsonl"
    write_events(data, n=2750, seed=2, anomaly_rate=0.0, bad_rate=0.0)
    cfg = _write_config(tmp_path, data, source_extra="follow = true")
    text = cfg.read_text().replace("batch_size = 200", "batch_size = 500")
    cfg.write_text(text)
    proc = _cli("run", "--config", str(cfg), "--quiet", "--idle-timeout", "2")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    counters = _newest_counters(tmp_path / "ck")
    assert counters["records"] == counters["good"] == 2750
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 2750


def test_a_batch_the_core_cannot_learn_is_dead_lettered_and_the_stream_goes_on(tmp_path, events):
    """When the core refuses a batch without naming a record (its state left as it was), the whole
    batch is dead-lettered with the reason and the job goes on with the next batch."""
    path, truth = events
    pipe = _pipeline(tmp_path, path, ck="ck-fail", scores="fail.jsonl", refit_every=0)
    pipe._ensure_online(len(DEMO_FIELDS))
    real = pipe.online.score_learn        # the pipeline's step (one pass)
    calls = []

    def flaky(X, **kw):
        calls.append(X.shape[0])
        if len(calls) == 3:
            raise ValueError("Fitting the mixture model failed (simulated)")
        return real(X, **kw)

    pipe.online.score_learn = flaky
    s = pipe.run()
    pipe.close()
    n_bad = int(truth["bad"].sum())
    assert s.records == 8000 and s.rejected == n_bad + calls[2] and s.good == 8000 - n_bad - calls[2]
    dead = [json.loads(x) for x in (tmp_path / "fail.jsonl.dead").read_text().splitlines()]
    simulated = [d for d in dead if "simulated" in d["reason"]]
    assert len(simulated) == calls[2] and all("line" in d for d in simulated)
    assert len((tmp_path / "fail.jsonl").read_text().splitlines()) == s.good
    assert pipe.online.n_seen == s.good


class _SlowDisk(JSONLinesSink):
    """A JSON lines sink whose fsync waits for the test: the checkpoint's durable part is pending."""

    def __init__(self, path, gate, fail=False):
        super().__init__(path)
        self.gate, self.fail, self.started = gate, fail, threading.Event()

    def flush_async(self):
        sync = super().flush_async()

        def slow():
            self.started.set()
            assert self.gate.wait(60)
            sync()
            if self.fail:
                from connectors.base import ConnectorError
                raise ConnectorError("disk full (simulated)")
        return slow


def test_a_checkpoint_is_visible_only_once_its_records_are_durable(tmp_path, events):
    """The periodic checkpoint's fsyncs and file run on a thread while the next batches are
    processed; until the sink's fsync returned, the newest checkpoint is the previous one (a kill
    then resumes from it), and the checkpoint's event comes once it is done."""
    path, _ = events
    gate = threading.Event()
    pipe = _pipeline(tmp_path, path, refit_every=0)
    pipe.sinks["scores"].close()
    pipe.sinks["scores"] = slow = _SlowDisk(str(tmp_path / "slow.jsonl"), gate)
    seen, while_pending = [], []
    pipe.observers.append(lambda event, fields: seen.append(event))

    def progress(summary):
        if pipe._pending is not None and not gate.is_set():
            assert slow.started.wait(30)
            # the first checkpoint is not visible, and not reported, while its fsync waits
            assert pipe.store.checkpoints() == [] and "checkpoint" not in seen
            while_pending.append(summary.batches)
            if len(while_pending) == 3:
                gate.set()

    s = pipe.run(progress=progress)
    pipe.close()
    assert len(while_pending) == 3        # three batches were processed while it was pending
    assert s.checkpoints >= 2 and len(pipe.store.checkpoints()) == min(s.checkpoints, pipe.store.keep)
    assert seen.count("checkpoint") == s.checkpoints
    meta = pipe.store.load_latest()[1]
    assert meta["counters"]["records"] == s.records == 8000


def test_a_failed_durable_part_stops_the_job_with_its_error(tmp_path, events):
    path, _ = events
    gate = threading.Event()
    gate.set()
    pipe = _pipeline(tmp_path, path, refit_every=0)
    pipe.sinks["scores"].close()
    pipe.sinks["scores"] = _SlowDisk(str(tmp_path / "slow.jsonl"), gate, fail=True)
    with pytest.raises(ConnectorError, match="disk full"):
        pipe.run()
    pipe.close()
    assert pipe.store.checkpoints() == []      # nothing claims records the disk may not hold
