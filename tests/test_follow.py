"""Follow mode follows the path as ``tail -F`` does: rotation, truncation, restarts, idle timeouts.

Also the columns a line source builds (position columns, carried fields).  Every test uses real files;
writers are threads; tests wait on conditions with a generous deadline, never on a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import warnings

import numpy as np
import pytest

from connectors import CSVSource, JSONDecoder, JSONLinesSource, PositionError
from connectors.lines import RotationWarning, TruncationWarning

DEADLINE_S = 30.0


def _lines(values, *, last_newline=True):
    text = "".join(f'{{"x": {v}}}\n' for v in values)
    return text if last_newline else text[:-1]


def _write(path, text, mode="w"):
    with open(path, mode) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return str(path)


def _read_until(src, n, *, step=7, deadline_s=DEADLINE_S, progress=None):
    """Read batches until ``n`` records (good plus rejected) came, or fail at the deadline.

    ``progress``, a one-element list, is kept at the number of records read so far (for writers).
    """
    xs, metas = [], []
    got = 0
    deadline = time.monotonic() + deadline_s
    while got < n:
        assert time.monotonic() < deadline, f"only {got} of {n} records after {deadline_s} s"
        b = src.read(min(step, n - got), timeout=0.05)
        assert b.status != "end"
        assert not b.rejects, [r.reason for r in b.rejects]
        got += b.n_records
        xs += b.X.ravel().tolist()
        metas += b.meta
        if progress is not None:
            progress[0] = got
    return xs, metas


def _assert_quiet(src, polls=3):
    """Nothing more to read: a few reads answer idle with no record."""
    for _ in range(polls):
        b = src.read(100, timeout=0.02)
        assert b.status == "idle" and b.n_records == 0, b


def _saved(position):
    return json.loads(json.dumps(position))  # what a checkpoint store would give back


# -- rotation by rename ---------------------------------------------------------------------------


def test_rotation_by_rename_reads_both_files_once_in_order(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(10)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    xs, _ = _read_until(src, 4)
    # more records for the old file (its last line unterminated), then rotation and a new file
    _write(path, _lines(range(10, 20), last_newline=False), "a")
    os.rename(path, tmp_path / "app.jsonl.1")
    _write(path, _lines(range(20, 30)))
    more, metas = _read_until(src, 26)
    xs += more
    assert xs == list(range(30))
    assert src.rotations == 1
    assert {m["file"] for m in metas} == {path}
    # line numbers restart in the new file
    assert [m["line"] for m in metas[-10:]] == list(range(1, 11))
    assert [m["offset"] for m in metas[-2:]] == [len(_lines(range(20, 28))), len(_lines(range(20, 29)))]
    _assert_quiet(src)


def test_rotation_while_a_writer_thread_appends(tmp_path):
    """A logging process writes 3 000 records and rotates its file every 500 (rename, new file).

    As with ``tail -F``, a file must not be rotated twice before the reader has reached the first
    rotated file's end, so before each rotation the writer waits until the reader is on its file.
    """
    path = str(tmp_path / "app.jsonl")
    _write(path, "")
    n, every = 3000, 500
    done = threading.Event()
    progress = [0]

    def writer():
        fh = open(path, "a")  # noqa: SIM115 - reopened at every rotation, like a logger
        for i in range(n):
            if i and i % every == 0:
                deadline = time.monotonic() + DEADLINE_S
                while progress[0] <= i - every and time.monotonic() < deadline:
                    done.wait(0.001)  # the reader has not read from this file yet
                fh.close()
                os.rename(path, tmp_path / f"app.jsonl.{i // every}")
                fh = open(path, "a")  # noqa: SIM115
            fh.write(f'{{"x": {i}}}\n')
            if i % 50 == 0:
                fh.flush()
                time.sleep(0.001)  # let the reader catch up now and then (the test waits on counts)
        fh.close()
        done.set()

    src = JSONLinesSource(path, fields=["x"], follow=True, poll_interval=0.01)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        xs, _ = _read_until(src, n, step=333, progress=progress)
    finally:
        thread.join(DEADLINE_S)
    assert done.is_set()
    assert xs == list(range(n))
    _assert_quiet(src)


def test_rotated_path_that_vanishes_and_comes_back(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(5)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    assert _read_until(src, 5)[0] == list(range(5))
    os.rename(path, tmp_path / "old.log")
    _write(tmp_path / "old.log", _lines(range(5, 8)), "a")  # written before the writer reopened
    assert _read_until(src, 3)[0] == [5, 6, 7]
    _assert_quiet(src)
    _write(path, _lines(range(8, 10)))
    assert _read_until(src, 2)[0] == [8, 9]


def test_csv_rotation_reads_the_new_header(tmp_path):
    path = _write(tmp_path / "app.csv", "id,x\na,1\nb,2\n")
    src = CSVSource(path, columns=["x"], follow=True)
    assert _read_until(src, 2)[0] == [1, 2]
    os.rename(path, tmp_path / "app.csv.1")
    _write(path, "x,id\n3,c\n4,d\n")  # the new file has its own header (columns in another order)
    xs, metas = _read_until(src, 2)
    assert xs == [3, 4] and [m["line"] for m in metas] == [2, 3]


# -- truncation (copytruncate) -------------------------------------------------------------------


@pytest.mark.parametrize("regrown", [False, True], ids=["shorter", "regrown-past-offset"])
def test_copytruncate_warns_and_reads_every_new_record(tmp_path, regrown):
    path = _write(tmp_path / "app.jsonl", _lines(range(100, 150)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    assert _read_until(src, 50, step=50)[0] == list(range(100, 150))
    old_size = os.path.getsize(path)
    shutil.copy(path, tmp_path / "app.jsonl.1")  # what logrotate's copytruncate does
    os.truncate(path, 0)
    new = list(range(1000, 1200)) if regrown else list(range(10))  # more / fewer bytes than before
    _write(path, _lines(new), "a")
    assert (os.path.getsize(path) > old_size) == regrown
    with pytest.warns(TruncationWarning, match=f"{path!r} was truncated.*{old_size} bytes had been read"):
        xs, metas = _read_until(src, len(new), step=64)
    assert xs == new
    assert metas[0]["line"] == 1 and metas[0]["offset"] == 0
    assert src.truncations == 1
    _assert_quiet(src)


def test_csv_truncation_reads_the_header_again(tmp_path):
    path = _write(tmp_path / "app.csv", "id,x\na,1\nb,2\nc,3\n")
    src = CSVSource(path, columns=["x"], follow=True)
    assert _read_until(src, 3)[0] == [1, 2, 3]
    os.truncate(path, 0)
    _write(path, "x,id\n7,d\n", "a")
    with pytest.warns(TruncationWarning):
        xs, metas = _read_until(src, 1)
    assert xs == [7] and metas[0]["line"] == 2 and metas[0]["offset"] == len("x,id\n")


def test_truncation_while_a_writer_thread_appends(tmp_path):
    """Truncated while the reader waits; the writer goes on: every record after it is read."""
    path = _write(tmp_path / "app.jsonl", _lines(range(20)))
    src = JSONLinesSource(path, fields=["x"], follow=True, poll_interval=0.01)
    assert _read_until(src, 20)[0] == list(range(20))
    truncated = threading.Event()

    def writer():
        os.truncate(path, 0)
        truncated.set()
        with open(path, "a") as fh:
            for i in range(10_000, 12_000):
                fh.write(f'{{"x": {i}}}\n')
                if i % 100 == 0:
                    fh.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    with pytest.warns(TruncationWarning):
        xs, _ = _read_until(src, 2000, step=500)
    thread.join(DEADLINE_S)
    assert truncated.is_set() and xs == list(range(10_000, 12_000))


# -- restarts from a saved position --------------------------------------------------------------


def test_restart_after_rotation_finds_the_old_file(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(10)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    _read_until(src, 6)
    pos = _saved(src.position())
    src.close()
    assert pos["rotated"] is False
    # while the job is down: more records in the old file, rotation, records in the new one
    _write(path, _lines(range(10, 15), last_newline=False), "a")
    os.rename(path, tmp_path / "app.jsonl.1")
    _write(path, _lines(range(15, 20)))
    fresh = JSONLinesSource(path, fields=["x"], follow=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is lost, so nothing to warn about
        fresh.seek(pos)
        xs, _ = _read_until(fresh, 14)
    assert xs == list(range(6, 20))
    _assert_quiet(fresh)


def test_restart_from_a_position_taken_while_draining_the_rotated_file(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(5), last_newline=False))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    assert _read_until(src, 4)[0] == [0, 1, 2, 3]  # the unterminated last line waits
    _assert_quiet(src)
    before = _saved(src.position())
    os.rename(path, tmp_path / "app.jsonl.1")
    _write(path, _lines(range(5, 9)))
    assert _read_until(src, 1, step=1)[0] == [4]  # rotated: the last line is complete
    during = _saved(src.position())
    assert during["rotated"] is True and during["offset"] == os.path.getsize(tmp_path / "app.jsonl.1")
    for pos, expected in [(before, list(range(4, 9))), (during, list(range(5, 9)))]:
        fresh = JSONLinesSource(path, fields=["x"], follow=True)
        fresh.seek(pos)
        # the same place; ``rotated`` now says that the path names another file
        assert fresh.position() == {**pos, "rotated": True}
        assert _read_until(fresh, len(expected))[0] == expected
        _assert_quiet(fresh)


def test_restart_after_rotation_when_the_old_file_is_gone_warns(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(10)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    _read_until(src, 6)
    pos = _saved(src.position())
    src.close()
    os.rename(path, tmp_path / "app.jsonl.1")
    _write(path, _lines(range(10, 15)))
    os.remove(tmp_path / "app.jsonl.1")  # compressed or deleted: records 6..9 cannot be read
    fresh = JSONLinesSource(path, fields=["x"], follow=True)
    with pytest.warns(RotationWarning, match=rf"after offset {pos['offset']} \(line 6\) are not read"):
        fresh.seek(pos)
    assert fresh.position()["rotated"] is True  # until the new file is opened, the old position stands
    assert _read_until(fresh, 5)[0] == list(range(10, 15))
    assert fresh.rotations == 1


def test_restart_after_rotation_when_nothing_is_at_the_path_yet(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(4)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    _read_until(src, 2)
    pos = _saved(src.position())
    os.remove(path)
    fresh = JSONLinesSource(path, fields=["x"], follow=True)
    with pytest.warns(RotationWarning, match="the file that appears at"):
        fresh.seek(pos)
    assert fresh.position() == {**pos, "rotated": True}
    _assert_quiet(fresh)
    _write(path, _lines([7, 8]))
    assert _read_until(fresh, 2)[0] == [7, 8]


@pytest.mark.parametrize("regrown", [False, True], ids=["shorter", "regrown-past-offset"])
def test_restart_after_truncation(tmp_path, regrown):
    path = _write(tmp_path / "app.jsonl", _lines(range(100, 120)))
    src = JSONLinesSource(path, fields=["x"], follow=True)
    _read_until(src, 15)
    pos = _saved(src.position())
    src.close()
    os.truncate(path, 0)
    new = list(range(1000, 1100)) if regrown else [1, 2, 3]
    _write(path, _lines(new), "a")
    fresh = JSONLinesSource(path, fields=["x"], follow=True)
    with pytest.warns(TruncationWarning, match=f"offset is {pos['offset']}, line 15"):
        fresh.seek(pos)
    assert fresh.truncations == 1
    assert _read_until(fresh, len(new), step=50)[0] == new
    _assert_quiet(fresh)


def test_follow_mode_still_refuses_a_position_of_another_source(tmp_path):
    path = _write(tmp_path / "app.jsonl", _lines(range(4)))
    other = _write(tmp_path / "other.log", _lines(range(4)))
    pos = _saved(JSONLinesSource(other, fields=["x"]).read(2).position)
    with pytest.raises(PositionError, match="does not exist any more"):
        JSONLinesSource(path, fields=["x"], follow=True).seek(pos)
    with pytest.raises(PositionError, match="position must be a dict with keys"):
        JSONLinesSource(path, fields=["x"], follow=True).seek({**pos, "bogus": 1})


@pytest.mark.parametrize("change", ["rotated", "truncated", "rewritten"])
def test_without_follow_a_changed_file_still_raises(tmp_path, change):
    path = _write(tmp_path / "app.jsonl", _lines(range(10)))
    src = JSONLinesSource(path, fields=["x"])
    src.read(5)
    pos = _saved(src.position())
    if change == "rotated":
        os.rename(path, tmp_path / "app.jsonl.1")
        _write(path, _lines(range(10, 20)))
    elif change == "truncated":
        _write(path, _lines([1]))
    else:
        _write(path, _lines(range(50, 60)))
    with pytest.raises(PositionError, match="replaced|truncated"):
        JSONLinesSource(path, fields=["x"]).seek(pos)


# -- read returns within its timeout -------------------------------------------------------------


def test_read_returns_within_timeout_while_a_writer_trickles(tmp_path):
    """A partial batch comes back within ``timeout`` (+ a poll) although records keep arriving."""
    path = _write(tmp_path / "app.jsonl", "")
    stop = threading.Event()
    written = [0]

    def writer():
        with open(path, "a") as fh:
            while not stop.is_set():
                fh.write(f'{{"x": {written[0]}}}\n')
                fh.flush()
                written[0] += 1
                stop.wait(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    src = JSONLinesSource(path, fields=["x"], follow=True, poll_interval=0.05)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while written[0] < 20:  # the writer is running
            assert time.monotonic() < deadline
            stop.wait(0.01)
        got = []
        for _ in range(5):
            t0 = time.monotonic()
            b = src.read(10**6, timeout=0.3)
            elapsed = time.monotonic() - t0
            assert elapsed < 0.3 + 0.05 + 2.0, elapsed  # generous slack for a loaded machine
            got += b.X.ravel().tolist()
    finally:
        stop.set()
        thread.join(DEADLINE_S)
    assert got and got == list(range(len(got)))


def test_partial_batch_then_idle_within_timeout(tmp_path):
    """2 750 records and batches of 500: the last 250 and then "idle" come back within the timeout."""
    path = _write(tmp_path / "app.jsonl", "")
    finished = threading.Event()

    def writer():
        with open(path, "a") as fh:
            fh.writelines(f'{{"x": {i}}}\n' for i in range(2750))
        finished.set()

    threading.Thread(target=writer).start()
    assert finished.wait(DEADLINE_S)
    src = JSONLinesSource(path, fields=["x"], follow=True)
    sizes = []
    for _ in range(8):
        t0 = time.monotonic()
        b = src.read(500, timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + 0.05 + 2.0
        sizes.append(b.n_records)
    assert sizes == [500] * 5 + [250, 0, 0]


# -- columns -------------------------------------------------------------------------------------


class _CarryingDecoder:
    """A decoder with ``decode_columns``: JSONDecoder's values plus the ``id`` field as a column."""

    def __init__(self):
        self._inner = JSONDecoder(["x"])
        self.n_features, self.feature_names = 1, ["x"]

    def decode_many(self, raws):
        return self._inner.decode_many(raws)

    def decode_columns(self, raws):
        X, good, bad = self._inner.decode_many(raws)
        ids = np.empty(len(good), dtype=object)
        ids[:] = [json.loads(raws[j]).get("id") for j in good]
        return X, good, bad, {"id": ids}


def test_batches_are_columns_with_carried_fields(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1, "id": "a"}\n\n{"x": "bad", "id": "b"}\n{"x": 3, "id": "c"}\n')
    b = JSONLinesSource(path, decoder=_CarryingDecoder(), name="s").read(10)
    cols = b.columns
    assert list(cols) == ["source", "file", "line", "offset", "id"]
    assert cols["line"].dtype == np.int64 and cols["offset"].dtype == np.int64
    assert cols["source"].dtype == object and cols["file"].dtype == object
    assert b.meta == [
        {"source": "s", "file": path, "line": 1, "offset": 0, "id": "a"},
        {"source": "s", "file": path, "line": 4, "offset": 21 + 24, "id": "c"},
    ]
    assert b.rejects[0].meta == {"source": "s", "file": path, "line": 3, "offset": 21}
    empty = JSONLinesSource(path, fields=["x"], follow=True)
    empty.read(10)
    idle = empty.read(10, timeout=0)
    assert idle.status == "idle" and set(idle.columns) >= {"source", "file", "line", "offset"}


def test_carry_passes_fields_through_as_columns(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1, "id": "a", "t": {"s": 5}}\n{"x": "no", "id": "b"}\n{"x": 3, "id": 7}\n')
    b = JSONLinesSource(path, fields=["x"], carry=["id", "t.s"]).read(10)
    assert list(b.columns) == ["source", "file", "line", "offset", "id", "t.s"]
    assert b.columns["id"].tolist() == ["a", 7] and b.columns["t.s"].tolist() == [5, None]
    assert b.X.ravel().tolist() == [1, 3] and b.rejects[0].meta["line"] == 2
    a = _write(tmp_path / "a.csv", "id,x\na,1\nb,oops\n")
    _write(tmp_path / "b.csv", "x,id\n3,c\n")  # another column order: resolved per file
    b = CSVSource(str(tmp_path / "*.csv"), columns=["x"], carry=["id"]).read(10)
    assert b.meta == [
        {"source": str(tmp_path / "*.csv"), "file": a, "line": 2, "offset": 5, "id": "a"},
        {"source": str(tmp_path / "*.csv"), "file": str(tmp_path / "b.csv"), "line": 2, "offset": 5, "id": "c"},
    ]


def test_carry_argument_is_checked(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n')
    with pytest.raises(ValueError, match="give it to the decoder"):
        JSONLinesSource(path, decoder=JSONDecoder(["x"]), carry=["id"])
    with pytest.raises(ValueError, match="may not name the position columns"):
        JSONLinesSource(path, fields=["x"], carry=["offset"])
    with pytest.raises(TypeError, match="carry must be a sequence"):
        CSVSource(path, columns=["x"], carry="id")
