"""File sources resume exactly from any position; sinks truncate on restore and write valid JSON."""

from __future__ import annotations

import gzip
import json
import os
import time

import numpy as np
import pytest

from connectors import (
    ConnectorError,
    CSVSink,
    CSVSource,
    DeadLetterSink,
    JSONLinesSink,
    JSONLinesSource,
    ParquetSource,
    PositionError,
)

JSONL = (
    '{"x": 0, "y": 0.5}\n'
    '{"x": 1, "y": 1.5}\n'
    "\n"
    '{"x": "bad", "y": 2}\n'
    '{"x": 3, "y": 3.5}\n'
    "not json\n"
    '{"x": 5, "y": 5.5}\n'
    '{"x": 6, "y": 6.5}\n'
)
CSV = "id,x,y\na,0,0.5\nb,1,1.5\nc,oops,2\nd,3,3.5\n\ne,4,\nf,5,5.5\n"


def _records(batch):
    """Every record of a batch as (kind, file, line, payload), sorted by file and line."""
    good = [("good", m["file"], m.get("line", m.get("row")), tuple(x)) for m, x in zip(batch.meta, batch.X.tolist())]
    bad = [("bad", r.meta["file"], r.meta.get("line", r.meta.get("row")), r.reason) for r in batch.rejects]
    return sorted(good + bad, key=lambda t: (t[1], t[2]))


def _drain(src, step):
    out = []
    while True:
        b = src.read(step, timeout=0)
        assert b.n_records <= step
        out += _records(b)
        if b.status == "end":
            return out


def _check_resume_everywhere(make):
    """Read one record at a time, saving each position; from each, a fresh source yields the rest."""
    src = make()
    positions, seen = [src.position()], []
    while True:
        b = src.read(1, timeout=0)
        if b.status == "end":
            break
        assert b.n_records == 1
        seen += _records(b)
        positions.append(json.loads(json.dumps(b.position)))  # positions are JSON-able
    src.close()
    assert len(positions) == len(seen) + 1
    for k, pos in enumerate(positions):
        fresh = make()
        fresh.seek(pos)
        assert _drain(fresh, 3) == seen[k:], f"resume from record {k} at {pos}"
        assert fresh.position()["records"] == len(seen)
        fresh.close()
    # everything in one go gives the same records
    assert _drain(make(), 1000) == seen
    return seen


def _write(path, text, mode="w"):
    with open(path, mode) as fh:
        fh.write(text)
    return str(path)


def test_jsonl_resume_from_every_record(tmp_path):
    path = _write(tmp_path / "a.jsonl", JSONL)
    seen = _check_resume_everywhere(lambda: JSONLinesSource(path, fields=["x", "y"]))
    kinds = [(k, line) for k, _, line, _ in seen]
    assert kinds == [("good", 1), ("good", 2), ("bad", 4), ("good", 5), ("bad", 6), ("good", 7), ("good", 8)]
    assert seen[2][3] == "field 'x' is not a number: 'bad'"


def test_csv_resume_from_every_record(tmp_path):
    path = _write(tmp_path / "a.csv", CSV)
    seen = _check_resume_everywhere(lambda: CSVSource(path, columns=["x", "y"]))
    assert [s[2] for s in seen] == [2, 3, 4, 5, 7, 8]
    assert seen[0] == ("good", path, 2, (0.0, 0.5))
    assert seen[2][3] == "column 'x' is not a number: 'oops'"
    assert seen[4][3] == "column 'y' is empty"


def test_gzip_resume_from_every_record(tmp_path):
    path = str(tmp_path / "a.jsonl.gz")
    with gzip.open(path, "wt") as fh:
        fh.write(JSONL)
    seen = _check_resume_everywhere(lambda: JSONLinesSource(path, fields=["x", "y"]))
    assert len(seen) == 7 and seen[-1] == ("good", path, 8, (6.0, 6.5))


def test_gzip_csv(tmp_path):
    path = str(tmp_path / "a.csv.gz")
    with gzip.open(path, "wt") as fh:
        fh.write(CSV)
    seen = _check_resume_everywhere(lambda: CSVSource(path, columns=["x", "y"]))
    assert [s[0] for s in seen] == ["good", "good", "bad", "good", "bad", "good"]


def test_glob_of_files_resume_from_every_record(tmp_path):
    lines = JSONL.splitlines(keepends=True)
    for i in range(3):
        _write(tmp_path / f"part-{i}.jsonl", "".join(lines[i * 3: i * 3 + 3]))
    _write(tmp_path / "ignored.txt", "garbage\n")
    pattern = str(tmp_path / "part-*.jsonl")
    seen = _check_resume_everywhere(lambda: JSONLinesSource(pattern, fields=["x", "y"]))
    assert [os.path.basename(s[1]) for s in seen] == ["part-0.jsonl"] * 2 + ["part-1.jsonl"] * 3 + ["part-2.jsonl"] * 2


def test_glob_of_csv_files_each_with_header(tmp_path):
    _write(tmp_path / "b.csv", "x,y\n1,2\n3,4\n")
    _write(tmp_path / "a.csv", "y,x\n10,20\n")  # other column order: resolved by name per file
    seen = _check_resume_everywhere(lambda: CSVSource(str(tmp_path / "*.csv"), columns=["x", "y"]))
    assert [s[3] for s in seen] == [(20.0, 10.0), (1.0, 2.0), (3.0, 4.0)]


def test_csv_all_columns_by_default_and_header_mismatch(tmp_path):
    _write(tmp_path / "a.csv", "x,y\n1,2\n")
    _write(tmp_path / "b.csv", "x,z\n1,2\n")
    src = CSVSource(str(tmp_path / "*.csv"))
    b = src.read(1)
    assert src.feature_names == ["x", "y"] and b.X.tolist() == [[1.0, 2.0]]
    with pytest.raises(ConnectorError, match="has columns \\['x', 'z'\\], expected \\['x', 'y'\\]"):
        src.read(10)


def test_csv_without_header(tmp_path):
    path = _write(tmp_path / "a.csv", "1;2;3\n4;5;6\n")
    b = CSVSource(path, columns=[2, 0], header=False, delimiter=";").read(10)
    assert b.X.tolist() == [[3, 1], [6, 4]] and [m["line"] for m in b.meta] == [1, 2]


def test_parquet_resume_from_every_record(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x = [0.0, 1.0, None, 3.0, float("nan"), 5.0, 6.0]
    y = [0, 1, 2, 3, 4, 5, 6]
    pq.write_table(pa.table({"x": x, "y": y, "s": list("abcdefg")}), tmp_path / "a.parquet", row_group_size=3)
    pq.write_table(pa.table({"x": [7.0], "y": [7]}), tmp_path / "b.parquet")
    pattern = str(tmp_path / "*.parquet")
    seen = _check_resume_everywhere(lambda: ParquetSource(pattern, columns=["x", "y"]))
    assert [s[0] for s in seen] == ["good", "good", "bad", "good", "bad", "good", "good", "good"]
    assert seen[2][3] == "column 'x' is null" and seen[4][3] == "column 'x' is not finite: nan"
    assert seen[-1] == ("good", str(tmp_path / "b.parquet"), 0, (7.0, 7.0))
    # missing="nan" passes nulls on as NaN but still rejects a literal NaN
    b = ParquetSource(pattern, columns=["x"], missing="nan").read(100)
    assert np.isnan(b.X[2, 0]) and b.X.shape == (7, 1) and len(b.rejects) == 1


def test_parquet_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "s": ["a", "b"]}), path)
    with pytest.raises(ConnectorError, match="lacks columns \\['z'\\]"):
        ParquetSource(str(path), columns=["x", "z"])
    with pytest.raises(ConnectorError, match="column 's' .* must be numeric"):
        ParquetSource(str(path), columns=["s"]).read(1)
    src = ParquetSource(str(path), columns=["x"])
    src.read(1)
    pos = src.position()
    pq.write_table(pa.table({"x": [5.0, 6.0, 7.0]}), path)  # rewritten
    with pytest.raises(PositionError, match="was replaced"):
        ParquetSource(str(path), columns=["x"]).seek(pos)


def test_parquet_meta_columns_and_carry(tmp_path):
    """Meta arrives as columns with the values of the former per-record dicts; carried columns follow."""
    import datetime as dt

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ts = [dt.datetime(2024, 1, 2, 3, 4, 5, k) for k in range(6)]
    table = pa.table({"x": [0.0, None, 2.0, 3.0, float("inf"), 5.0], "id": ["e0", "e1", None, "e3", "e4", "e5"],
                      "n": [10, 11, 12, None, 14, 15], "ts": pa.array(ts, pa.timestamp("us"))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(table.slice(0, 1), tmp_path / "b.parquet")
    src = ParquetSource(str(tmp_path / "*.parquet"), columns=["x"], carry=["id", "n", "ts"], name="pq")
    b = src.read(5)
    cols = b.columns
    assert list(cols) == ["source", "file", "row_group", "row", "id", "n", "ts"]
    assert all(isinstance(c, np.ndarray) and len(c) == 3 for c in cols.values())
    assert cols["row_group"].dtype == np.int64 and cols["row"].tolist() == [0, 2, 3]
    assert cols["id"].tolist() == ["e0", None, "e3"] and cols["ts"][0] == "2024-01-02T03:04:05.000000"
    assert cols["n"].tolist()[:2] == [10.0, 12.0] and np.isnan(cols["n"][2])  # int with nulls: float
    a = str(tmp_path / "a.parquet")
    assert b.meta[1] == {"source": "pq", "file": a, "row_group": 0, "row": 2, "id": None, "n": 12.0,
                         "ts": "2024-01-02T03:04:05.000002"}
    assert [(r.reason, r.meta["row"], r.meta["id"], r.meta["n"]) for r in b.rejects] == [
        ("column 'x' is null", 1, "e1", 11.0), ("column 'x' is not finite: inf", 4, "e4", 14.0)]
    rest = src.read(100)
    assert rest.columns["row_group"].tolist() == [1, 0] and rest.columns["id"].tolist() == ["e5", "e0"]
    assert rest.columns["file"].tolist() == [a, str(tmp_path / "b.parquet")]
    end = src.read(10)
    assert end.status == "end" and list(end.columns) == list(cols) and end.X.shape == (0, 1)
    # without carry, the same four fields as before
    assert list(ParquetSource(a, columns=["x"]).read(1).meta[0]) == ["source", "file", "row_group", "row"]


def test_parquet_carry_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"x": [1.0], "id": ["a"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [2.0]}), tmp_path / "b.parquet")
    src = ParquetSource(str(tmp_path / "*.parquet"), columns=["x"], carry=["id"])
    assert src.read(1).columns["id"].tolist() == ["a"]
    with pytest.raises(ConnectorError, match=r"b.parquet' lacks carried column\(s\) \['id'\]"):
        src.read(1)
    with pytest.raises(ValueError, match="carry must name distinct columns other than"):
        ParquetSource(str(tmp_path / "a.parquet"), columns=["x"], carry=["row"])
    with pytest.raises(ValueError, match="carry must be a list"):
        ParquetSource(str(tmp_path / "a.parquet"), columns=["x"], carry="id")


def test_final_line_without_newline_in_finished_file(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n{"x": 2}')
    src = JSONLinesSource(path, fields=["x"])
    b = src.read(10)
    assert b.X.tolist() == [[1.0], [2.0]] and b.position["offset"] == os.path.getsize(path)
    path2 = _write(tmp_path / "b.jsonl", '{"x": 1}\n{"x": ')
    b = JSONLinesSource(path2, fields=["x"]).read(10)
    assert b.X.tolist() == [[1.0]] and "malformed JSON" in b.rejects[0].reason


def test_truncated_last_line_waits_for_completion_in_follow_mode(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n{"x": 2')
    src = JSONLinesSource(path, fields=["x"], follow=True)
    b = src.read(10, timeout=0.05)
    assert b.X.tolist() == [[1.0]] and not b.rejects
    b = src.read(10, timeout=0.05)
    assert b.status == "idle" and b.n_records == 0
    pos = b.position
    _write(path, '.5}\n{"x": 3}\n', "a")
    b = src.read(10, timeout=0.05)
    assert b.X.tolist() == [[2.5], [3.0]] and [m["line"] for m in b.meta] == [2, 3]
    # a position taken before the append is still valid after it
    other = JSONLinesSource(path, fields=["x"], follow=True)
    other.seek(pos)
    assert other.read(10, timeout=0).X.tolist() == [[2.5], [3.0]]


def test_follow_mode_is_idle_not_end_and_respects_timeout(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n')
    src = JSONLinesSource(path, fields=["x"], follow=True)
    assert src.read(10, timeout=0).status == "records"
    t = time.monotonic()
    b = src.read(10, timeout=0.2)
    elapsed = time.monotonic() - t
    assert b.status == "idle" and 0.15 <= elapsed < 1.0
    _write(path, '{"x": 2}\n', "a")
    _write(tmp_path / "b.jsonl", '{"x": 3}\n')  # a new file in the glob is picked up too
    src2 = JSONLinesSource(str(tmp_path / "*.jsonl"), fields=["x"], follow=True)
    got = []
    for _ in range(5):
        got += src2.read(10, timeout=0.05).X.ravel().tolist()
    assert got == [1.0, 2.0, 3.0]
    _write(tmp_path / "c.jsonl", '{"x": 4}\n')
    assert src2.read(10, timeout=0.05).X.ravel().tolist() == [4.0]


def test_read_respects_max_records(tmp_path):
    path = _write(tmp_path / "a.jsonl", "".join(f'{{"x": {i}}}\n' for i in range(100)))
    src = JSONLinesSource(path, fields=["x"], block_size=64)  # many small blocks
    sizes = []
    while (b := src.read(7, timeout=0)).status != "end":
        sizes.append(b.n_records)
    assert sizes == [7] * 14 + [2]


@pytest.mark.parametrize("change", ["vanished", "replaced", "rewritten", "truncated"])
def test_position_errors(tmp_path, change):
    """Without follow mode a changed file is an error (follow mode: tests/test_follow.py)."""
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    _write(tmp_path / "b.jsonl", '{"x": 4}\n')  # the glob still matches a file when a.jsonl vanished
    src = JSONLinesSource(path, fields=["x"])
    pos = src.read(2).position
    src.close()
    if change == "vanished":
        os.remove(path)
    elif change == "replaced":
        _write(tmp_path / "new.jsonl", '{"x": 1}\n{"x": 2}\n{"x": 3}\n')
        os.replace(tmp_path / "new.jsonl", path)
    elif change == "rewritten":
        _write(path, '{"x": 9}\n{"x": 8}\n{"x": 7}\n')
    else:
        _write(path, '{"x": 1}\n')
    with pytest.raises(PositionError):
        JSONLinesSource(str(tmp_path / "*.jsonl"), fields=["x"]).seek(pos)


def test_malformed_position(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n')
    with pytest.raises(PositionError, match="position must be a dict with keys"):
        JSONLinesSource(path, fields=["x"]).seek({"offset": 3})


def test_source_settings_are_checked(tmp_path):
    path = _write(tmp_path / "a.jsonl", '{"x": 1}\n')
    with pytest.raises(ValueError, match="exactly one of fields and decoder"):
        JSONLinesSource(path)
    with pytest.raises(TypeError, match="bogus"):
        JSONLinesSource(path, fields=["x"], bogus=1)
    with pytest.raises(ConnectorError, match="matched no file"):
        JSONLinesSource(str(tmp_path / "none-*.jsonl"), fields=["x"])
    with pytest.raises(ValueError, match="max_records must be a positive int, got 0"):
        JSONLinesSource(path, fields=["x"]).read(0)


# -- sinks ---------------------------------------------------------------------------------------


def _strict_lines(path):
    def no_constants(text):
        raise AssertionError(f"invalid JSON constant {text}")

    with open(path, "rb") as fh:
        return [json.loads(line, parse_constant=no_constants) for line in fh]


def test_jsonl_sink_restore_truncates_and_nan_is_null(tmp_path):
    path = tmp_path / "out" / "scores.jsonl"
    sink = JSONLinesSink(path)
    sink.write([{"i": 0, "score": float("nan")}, {"i": 1, "score": np.float32(np.inf), "v": np.arange(2)}])
    sink.flush()
    saved = sink.position()
    assert saved == {"path": str(path), "size": os.path.getsize(path)}
    sink.write([{"i": 2, "score": 1.0}])
    sink.flush()
    sink.close()
    # crash + resume from the checkpointed position: the record written after it disappears
    sink = JSONLinesSink(path)
    sink.restore(json.loads(json.dumps(saved)))
    sink.write([{"i": 2, "score": 2.0}])
    sink.close()
    assert _strict_lines(path) == [
        {"i": 0, "score": None},
        {"i": 1, "score": None, "v": [0, 1]},
        {"i": 2, "score": 2.0},
    ]
    with pytest.raises(PositionError, match="has only"):
        JSONLinesSink(path).restore({"path": str(path), "size": 10**9})


def test_sink_flush_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_size), real(fd)))
    sink = JSONLinesSink(tmp_path / "a.jsonl")
    sink.write([{"a": 1}])
    sink.flush()
    assert synced == [len(b'{"a":1}\n')]
    assert sink.position()["size"] == synced[-1]


def test_position_is_durable_size_only(tmp_path):
    sink = JSONLinesSink(tmp_path / "a.jsonl")
    sink.write([{"a": 1}])
    assert sink.position()["size"] == 0
    sink.flush()
    assert sink.position()["size"] == len(b'{"a":1}\n') == (tmp_path / "a.jsonl").stat().st_size


def test_jsonl_sink_columns_equal_records(tmp_path):
    """write_columns (one msgspec call per batch) writes what write(records) writes, NaN as null."""
    from connectors.base import DictColumn, records_from_columns

    cols = {"id": np.array(["a", 'q"uote', "\u00e9"], dtype=object), "n": np.array([1, 2, 3]),
            "p": np.array([0.5, np.nan, np.inf]), "ok": np.array([True, False, True]),
            "x": np.array([[1.0, 2.5], [np.nan, 0.0], [1e300, -0.0]]),
            "r": DictColumn(np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]), ["0", "3"])}
    a, b = JSONLinesSink(tmp_path / "a.jsonl"), JSONLinesSink(tmp_path / "b.jsonl")
    a.write_columns(cols)
    b.write(records_from_columns(cols))
    a.close(), b.close()
    data = (tmp_path / "a.jsonl").read_bytes()
    assert data == (tmp_path / "b.jsonl").read_bytes()
    rows = [json.loads(line) for line in data.splitlines()]
    assert rows[1]["p"] is None and rows[2]["p"] is None and rows[1]["x"] == [None, 0.0]
    assert rows[0]["r"] == {"0": 0.25, "3": 0.75} and rows[1]["id"] == 'q"uote' and rows[2]["n"] == 3


def test_csv_sink(tmp_path):
    path = tmp_path / "a.csv"
    sink = CSVSink(path, ["id", "score"])
    saved = sink.position()
    sink.write([{"id": "a,b", "score": 1.5, "extra": 1}, {"id": "c", "score": float("nan")}])
    sink.flush()
    assert open(path).read() == 'id,score\n"a,b",1.5\nc,\n'
    sink.restore(saved)
    sink.write([{"id": "d", "score": 2}])
    sink.close()
    assert open(path).read() == "id,score\nd,2\n"
    sink = CSVSink(path, ["id", "score"])
    sink.restore({"path": str(path), "size": 0})
    sink.write([{"id": "e"}])
    sink.close()
    assert open(path).read() == "id,score\ne,\n"


def _csv_columns(seed: int, n: int) -> dict:
    """Random columns of every kind a CSV cell can come from."""
    from connectors.base import DictColumn

    rng = np.random.default_rng(seed)
    f = rng.normal(size=n) * 10.0 ** rng.integers(-12, 22, n)
    f[rng.random(n) < 0.2] = np.nan
    f[rng.random(n) < 0.05] = -np.inf
    words = np.array(["a", "b,c", 'say "hi"', "", "é ü", "two\nlines", "cr\rx", "tab\tx", " pad ", None], dtype=object)
    x = rng.normal(size=(n, 3))
    x[rng.random((n, 3)) < 0.1] = np.inf
    mixed = np.empty(n, dtype=object)
    mixed[:] = [[None, 1.5, "s", float("nan"), {"k": [1, float("inf")]}, 7][i % 6] for i in range(n)]
    return {
        "f": f, "f32": rng.normal(size=n).astype(np.float32), "i": rng.integers(-10**12, 10**12, n),
        "u": rng.integers(0, 9, n).astype(np.uint8), "b": rng.random(n) < 0.5,
        "s": words[rng.integers(0, len(words), n)], "ints": rng.integers(0, 3, n).astype(object),
        "x": x, "xi": rng.integers(0, 5, (n, 2)), "xb": rng.random((n, 2)) < 0.5,
        "d": DictColumn(np.where(rng.random((n, 2)) < 0.2, np.nan, rng.normal(size=(n, 2))), ["p", 'q"']),
        "mixed": mixed, "empty": np.empty((n, 0)), "u8": np.array(["x"] * n), "ignored": np.zeros(n),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_csv_write_columns_equals_write_records(tmp_path, seed):
    from connectors.base import records_from_columns

    fields = ["f", "f32", "i", "u", "b", "s", "ints", "x", "xi", "xb", "d", "mixed", "empty", "u8", "absent"]
    for delimiter in (",", ";", "."):
        cols = _csv_columns(seed, 200)
        a = CSVSink(tmp_path / f"c{delimiter}.csv", fields, delimiter=delimiter)
        b = CSVSink(tmp_path / f"r{delimiter}.csv", fields, delimiter=delimiter)
        for part in (slice(0, 0), slice(0, 150), slice(150, 200)):
            a.write_columns({k: v[part] for k, v in cols.items()})
            b.write(records_from_columns({k: v[part] for k, v in cols.items()}))
        a.close()
        b.close()
        text = (tmp_path / f"c{delimiter}.csv").read_text()
        assert text == (tmp_path / f"r{delimiter}.csv").read_text()
        assert text.count("\n") > 200 and '"say ""hi"""' in text
    # one field: an empty cell is written as "" (csv's rule for a row of one empty field), both ways
    a, b = CSVSink(tmp_path / "one_c.csv", ["v"]), CSVSink(tmp_path / "one_r.csv", ["v"])
    a.write_columns({"v": np.array([np.nan, 1.0])})
    b.write([{"v": float("nan")}, {"v": 1.0}])
    a.close()
    b.close()
    assert (tmp_path / "one_c.csv").read_text() == (tmp_path / "one_r.csv").read_text() == 'v\n""\n1.0\n'


def test_csv_write_columns_header_after_restore_and_errors(tmp_path):
    path = tmp_path / "a.csv"
    sink = CSVSink(path, ["id", "score"])
    sink.write_columns({"id": np.array(["a", "b"], dtype=object), "score": np.array([0.5, np.nan])})
    sink.restore({"path": str(path), "size": 0})
    sink.write_columns({"id": np.array(["c"], dtype=object), "score": np.array([2.0])})
    with pytest.raises(ValueError, match="equal lengths"):
        sink.write_columns({"id": np.array(["c"], dtype=object), "score": np.array([2.0, 3.0])})
    sink.close()
    assert path.read_text() == "id,score\nc,2.0\n"


def test_dead_letters_into_jsonl_sink(tmp_path):
    path = _write(tmp_path / "a.jsonl", JSONL + '{"x": 7, "y": "\xff"}\n')
    with open(tmp_path / "a.jsonl", "ab") as fh:
        fh.write(b'{"x": \xff}\n')
    src = JSONLinesSource(path, fields=["x", "y"])
    dead = DeadLetterSink(JSONLinesSink(tmp_path / "dead.jsonl"))
    n = 0
    for batch in src:
        n += dead.write_batch(batch)
    dead.close()
    letters = _strict_lines(tmp_path / "dead.jsonl")
    assert n == len(letters) == 4
    assert [d["line"] for d in letters] == [4, 6, 9, 10]
    assert letters[0]["reason"] == "field 'x' is not a number: 'bad'" and letters[0]["raw"] == '{"x": "bad", "y": 2}'
    assert letters[0]["file"] == path and letters[0]["position"]["path"] == path
    import base64

    assert base64.b64decode(letters[3]["raw_base64"]) == b'{"x": \xff}'
