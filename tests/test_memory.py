"""MemorySource / MemorySink / DeadLetterSink over memory."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from connectors import (
    ConnectorError,
    DeadLetterSink,
    JSONDecoder,
    MemorySink,
    MemorySource,
    PositionError,
    RawArrayDecoder,
    Reject,
)


def test_array_source_rejects_nonfinite_and_ends():
    data = np.array([[0.0, 1.0], [np.inf, 1.0], [2.0, 3.0], [4.0, np.nan], [5.0, 6.0]])
    src = MemorySource(data)
    data[0, 0] = 99.0  # the source keeps its own copy
    b = src.read(3)
    assert b.status == "records" and b.position == 3
    np.testing.assert_array_equal(b.X, [[0, 1], [2, 3]])
    assert [m["offset"] for m in b.meta] == [0, 2]
    assert b.rejects[0].reason == "feature 'x0' is not finite: inf" and b.rejects[0].meta["offset"] == 1
    b = src.read(3)
    assert b.n_records == 2 and b.rejects[0].reason == "feature 'x1' is not finite: nan"
    assert src.read(3).status == "end"


def test_bytes_source_with_decoder_resumes_everywhere():
    raws = [b'{"a": %d}' % i if i % 3 else b"junk" for i in range(10)]
    src = MemorySource(raws, decoder=JSONDecoder(["a"]))
    full = src.read(100)
    assert len(full.rejects) == 4 and full.X.ravel().tolist() == [1, 2, 4, 5, 7, 8]
    for k in range(11):
        src.seek(k)
        b = src.read(100)
        assert [m["offset"] for m in b.meta] == [i for i in range(k, 10) if i % 3]
        assert [r.meta["offset"] for r in b.rejects] == [i for i in range(k, 10) if i % 3 == 0]
    with pytest.raises(PositionError, match="beyond the 10 records"):
        src.seek(11)
    with pytest.raises(PositionError, match="non-negative int"):
        src.seek("3")


def test_raw_decoder_in_memory_source():
    rows = np.arange(6.0).reshape(3, 2)
    src = MemorySource([r.tobytes() for r in rows] + [b"xx"], decoder=RawArrayDecoder(2))
    b = src.read(10)
    np.testing.assert_array_equal(b.X, rows)
    assert b.rejects[0].raw == b"xx"


def test_endless_source_is_idle_and_wakes_on_append():
    src = MemorySource(np.zeros((1, 2)), endless=True)
    assert src.read(10).n_records == 1
    t = time.monotonic()
    b = src.read(10, timeout=0.1)
    assert b.status == "idle" and time.monotonic() - t >= 0.09
    threading.Timer(0.05, src.append, args=(np.ones((2, 2)),)).start()
    t = time.monotonic()
    b = src.read(10, timeout=5.0)
    assert b.n_records == 2 and time.monotonic() - t < 2.0
    src.close()


def test_iteration_stops_at_end():
    src = MemorySource(np.arange(10.0).reshape(5, 2))
    src.batch_size = 2
    assert [b.n_records for b in src] == [2, 2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="records must be 2-D"):
        MemorySource(np.zeros(3))
    with pytest.raises(ValueError, match="max_records must be a positive int, got -1"):
        MemorySource(np.zeros((1, 1))).read(-1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'loop'"):
        MemorySource(np.zeros((1, 1)), loop=True)


def test_memory_sink_flush_position_restore():
    sink = MemorySink()
    sink.write([{"a": 1, "s": float("nan")}])
    assert sink.position() == 0 and sink.records == []
    sink.flush()
    assert sink.position() == 1 and sink.records == [{"a": 1, "s": None}]
    saved = sink.position()
    sink.write([{"a": 2}])
    sink.flush()
    sink.write([{"a": 3}])
    sink.restore(saved)
    sink.flush()
    assert sink.records == [{"a": 1, "s": None}]
    with pytest.raises(PositionError, match="only 1 are durable"):
        sink.restore(5)


def test_memory_sink_copies_records():
    rec = {"v": [1, 2]}
    sink = MemorySink()
    sink.write([rec])
    sink.flush()
    rec["v"].append(3)
    assert sink.records == [{"v": [1, 2]}]


def test_failing_sink_raises_connector_error():
    with pytest.raises(ConnectorError, match="not delivered"):
        MemorySink(fail_on_flush=True).flush()


def test_dead_letter_sink_is_sink_agnostic():
    src = MemorySource([b'{"a": 1}', b"\xff\xfe", b'{"a": "x" }'], decoder=JSONDecoder(["a"]))
    dead = DeadLetterSink(MemorySink(), max_raw_bytes=1)
    batch = src.read(10)
    assert dead.write_batch(batch) == 2
    dead.write([Reject("manual", b"abc", {"source": "s"})])
    dead.flush()
    recs = dead.sink.records
    assert [r["offset"] for r in recs[:2]] == [1, 2]
    assert recs[0]["raw_base64"] == "/w==" and recs[0]["raw_truncated"] is True
    assert recs[0]["position"] == 3 and recs[0]["reason"].startswith("invalid UTF-8")
    assert recs[2] == {"reason": "manual", "raw": "a", "source": "s", "raw_truncated": True}
    assert dead.position() == 3 and dead.n_written == 3
    with pytest.raises(TypeError, match="sink must be a connectors.base.Sink"):
        DeadLetterSink([])
