"""ParquetSink: a directory of fsync'd part files; columns round-trip; restore discards later parts;
a writer SIGKILLed at any moment and restored writes exactly the files of an uninterrupted writer.

Run as a script (``python tests/test_parquet_sink.py DIR POSFILE N_BATCHES``) this module is the writer
process of the SIGKILL test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from connectors.base import (
    ConnectorError,
    DictColumn,
    PositionError,
    records_from_columns,
)
from connectors.parquet import ParquetSink

ROOT = Path(__file__).resolve().parents[1]

ROW_GROUP = 128


def _batch(k: int) -> dict:
    """Batch ``k`` of the writer: the same columns for the same k in every process."""
    rng = np.random.default_rng([7, k])
    n = int(rng.integers(50, 300))
    logp = rng.normal(size=n)
    logp[rng.random(n) < 0.1] = np.nan
    logp[rng.random(n) < 0.02] = np.inf
    x = rng.normal(size=(n, 3))
    x[rng.random((n, 3)) < 0.05] = np.nan
    files = np.array([None, "a.jsonl", 'b,"q".jsonl', "é"], dtype=object)[rng.integers(0, 4, n)]
    return {
        "cluster": rng.integers(0, 4, n),
        "logp": logp,
        "anomaly": rng.random(n) < 0.05,
        "file": files,
        "offset": np.arange(n, dtype=np.int64) + 1000 * k,
        "x": x,
        "resp": DictColumn(rng.dirichlet(np.ones(2), size=n), ["c0", "c1"]),
    }


def _save_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


SAVE_EVERY = 3


def _run_writer(directory: str, posfile: str, n_batches: int) -> None:
    """Write batches, flushing after each; after every ``SAVE_EVERY``-th flush save ``{"k", "sink"}``
    to ``posfile`` (as a pipeline checkpoints less often than it flushes); resume from ``posfile``."""
    sink = ParquetSink(directory, row_group_size=ROW_GROUP)
    start = 0
    if os.path.exists(posfile):
        with open(posfile) as fh:
            saved = json.load(fh)
        sink.restore(saved["sink"])
        start = saved["k"]
    for k in range(start, n_batches):
        cols = _batch(k)
        half = len(cols["cluster"]) // 2
        sink.write_columns({c: v[:half] for c, v in cols.items()})
        sink.write_columns({c: v[half:] for c, v in cols.items()})
        sink.flush()
        if (k + 1) % SAVE_EVERY == 0:
            _save_json(posfile, {"k": k + 1, "sink": sink.position()})
    sink.close()


def _canon(value):
    """Plain Python values with NaN made comparable (NaN != NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # a map read back
            return {k: _canon(v) for k, v in value}
        return [_canon(v) for v in value]
    return value


def _rows(table) -> list:
    return _canon(table.to_pylist())


def _expected(columns_list) -> list:
    """The rows the columns stand for, as Parquet gives them back (NaN and inf kept, None null)."""
    return _canon([r for cols in columns_list for r in records_from_columns(cols)])


def _part_names(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_round_trip_columns_equal_table(tmp_path):
    out = tmp_path / "scores"
    batches = [_batch(k) for k in range(3)]
    sink = ParquetSink(out, row_group_size=ROW_GROUP)
    for cols in batches:
        sink.write_columns(cols)
    sink.flush()
    table = pq.read_table(out)
    assert table.schema.names == list(batches[0])
    assert table.schema.field("cluster").type == pa.int64()
    assert table.schema.field("anomaly").type == pa.bool_()
    assert table.schema.field("file").type == pa.string()
    assert pa.types.is_list(table.schema.field("x").type)
    assert table.schema.field("x").type.value_type == pa.float64()
    assert table.schema.field("resp").type == pa.map_(pa.string(), pa.float64())
    assert _rows(table) == _expected(batches)
    # NaN stays NaN, inf stays inf, None is null
    logp = np.concatenate([b["logp"] for b in batches])
    got = table.column("logp").to_numpy()
    assert np.array_equal(got, logp, equal_nan=True) and np.isinf(got).any() and np.isnan(got).any()
    assert table.column("file").null_count == sum(int(np.equal(b["file"], None).sum()) for b in batches)
    # one part, row groups of ROW_GROUP rows and the remainder
    assert _part_names(out) == ["part-00000001.parquet"]
    md = pq.ParquetFile(out / "part-00000001.parquet").metadata
    sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    assert sum(sizes) == table.num_rows and all(s == ROW_GROUP for s in sizes[:-1]) and sizes[-1] <= ROW_GROUP
    sink.close()


def test_caller_arrays_are_copied(tmp_path):
    sink = ParquetSink(tmp_path / "o")
    a = np.array([1.0, 2.0])
    sink.write_columns({"a": a})
    a[:] = -1.0
    sink.close()
    assert pq.read_table(tmp_path / "o").column("a").to_pylist() == [1.0, 2.0]


def test_write_records_equals_write_columns(tmp_path):
    cols = _batch(0)
    with ParquetSink(tmp_path / "c") as a:
        a.write_columns(cols)
    with ParquetSink(tmp_path / "r") as b:
        b.write(records_from_columns(cols))
    ta, tb = pq.read_table(tmp_path / "c"), pq.read_table(tmp_path / "r")
    assert ta.schema.names == tb.schema.names
    assert _rows(ta) == _rows(tb)


def test_schema_of_a_directory_that_holds_parts(tmp_path):
    sink = ParquetSink(tmp_path / "o")
    sink.write_columns({"a": np.array([1.5]), "n": np.array([None], dtype=object)})
    sink.write_columns({"a": np.array([2]), "n": np.array(["s"], dtype=object)})  # int into float: cast
    with pytest.raises(ConnectorError, match="column 'm'"):
        ParquetSink(tmp_path / "p").write_columns({"m": np.array(["x", 1], dtype=object)})
    sink.close()
    assert pq.read_table(tmp_path / "o").to_pylist() == [{"a": 1.5, "n": None}, {"a": 2.0, "n": "s"}]
    # a new sink on the directory keeps the schema of its last part
    again = ParquetSink(tmp_path / "o")
    with pytest.raises(ConnectorError, match="column 'n'.*double.*string"):
        again.write_columns({"a": np.array([1.0]), "n": np.array([1.0])})
    again.write_columns({"n": np.array([None], dtype=object), "a": np.array([3.0])})
    again.close()
    assert _part_names(tmp_path / "o") == ["part-00000001.parquet", "part-00000002.parquet"]
    assert pq.read_table(tmp_path / "o").column("a").to_pylist() == [1.5, 2.0, 3.0]


def test_schema_is_fixed_at_the_first_row_group_from_every_buffered_batch(tmp_path):
    sink = ParquetSink(tmp_path / "o")
    sink.write([{"id": "a", "v": 1, "opt": None}, {"id": None, "v": 2}])
    sink.write([{"v": 2.5, "new": True}])  # before the first part: int with float gives float, columns add up
    with pytest.raises(ConnectorError, match=r"column 'v'.*string.*earlier batch.*double"):
        sink.write([{"v": "text"}])
    sink.flush()
    table = pq.read_table(tmp_path / "o")
    assert table.schema.names == ["id", "v", "opt", "new"]
    assert [table.schema.field(c).type for c in table.schema.names] == [pa.string(), pa.float64(), pa.null(),
                                                                        pa.bool_()]
    assert table.to_pylist() == [{"id": "a", "v": 1.0, "opt": None, "new": None},
                                 {"id": None, "v": 2.0, "opt": None, "new": None},
                                 {"id": None, "v": 2.5, "opt": None, "new": True}]
    # fixed now: a lacking column is null, another order is put right, a lossy type raises
    sink.write_columns({"new": np.array([False]), "v": np.array([7])})
    with pytest.raises(ConnectorError, match=r"column 'v'.*type string.*schema has double"):
        sink.write_columns({"v": np.array(["s"], dtype=object)})
    sink.close()
    assert pq.read_table(tmp_path / "o").to_pylist()[-1] == {"id": None, "v": 7.0, "opt": None, "new": False}


def test_widening_rewrites_every_part_and_the_part_in_progress(tmp_path):
    out = tmp_path / "o"
    sink = ParquetSink(out, row_group_size=2)
    sink.write_columns({"a": np.array([0.0, 1.0, 2.0]), "opt": np.array([None] * 3, dtype=object)})
    sink.flush()
    sink.write_columns({"a": np.array([3.0, 4.0, 5.0])})  # one row group in the temporary part, one row buffered
    sink.write_columns({"a": np.array([6.0]), "opt": np.array(["x"], dtype=object), "b": np.array([1])})
    sink.close()
    table = pq.read_table(out)
    assert table.schema.names == ["a", "opt", "b"] and table.schema.field("opt").type == pa.string()
    assert table.to_pylist() == [{"a": float(i), "opt": None, "b": None} for i in range(6)] + [
        {"a": 6.0, "opt": "x", "b": 1}]
    for name in _part_names(out):  # every part in the one schema, row groups kept
        assert pq.read_schema(out / name).remove_metadata() == table.schema.remove_metadata()
    md = [pq.ParquetFile(out / n).metadata for n in _part_names(out)]
    assert [[m.row_group(g).num_rows for g in range(m.num_row_groups)] for m in md] == [[2, 1], [2, 2]]


def test_a_widening_cut_short_is_finished_by_the_next_sink(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    pq.write_table(pa.table({"a": [1.0]}), out / "part-00000001.parquet")  # not yet rewritten
    pq.write_table(pa.table({"a": [2.0], "b": ["x"]}), out / "part-00000002.parquet")
    (out / ".part-00000003.parquet.tmp.old").write_bytes(b"left by a kill")
    sink = ParquetSink(out)
    assert _part_names(out) == ["part-00000001.parquet", "part-00000002.parquet"]
    assert pq.read_table(out).to_pylist() == [{"a": 1.0, "b": None}, {"a": 2.0, "b": "x"}]
    sink.close()


def test_pipeline_like_stream_warm_up_then_scores_and_k_changing(tmp_path):
    """Warm-up rows (scores None, a warming_up flag) then scores; responsibilities with 2 then 3 keys."""
    out = tmp_path / "scores"
    sink = ParquetSink(out, row_group_size=4)
    warm = {"row": np.arange(3), "cluster": np.array([None] * 3, dtype=object),
            "log_likelihood": np.array([None] * 3, dtype=object), "warming_up": np.ones(3, dtype=bool)}
    sink.write_columns(warm)
    scored = {"row": np.arange(3, 6), "cluster": np.array([0, 1, 0]), "log_likelihood": np.array([-1.0, -2.0, np.nan]),
              "responsibilities": DictColumn(np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]]), ["0", "1"])}
    sink.write_columns(scored)
    sink.flush()
    sink.write_columns({"row": np.array([6]), "cluster": np.array([2]), "log_likelihood": np.array([-3.0]),
                        "responsibilities": DictColumn(np.array([[0.1, 0.2, 0.7]]), ["0", "1", "2"])})
    sink.close()
    table = pq.read_table(out)
    assert table.schema.field("cluster").type == pa.int64()
    assert table.schema.field("responsibilities").type == pa.map_(pa.string(), pa.float64())
    rows = _rows(table)
    assert [r["cluster"] for r in rows] == [None, None, None, 0, 1, 0, 2]
    assert [r["warming_up"] for r in rows] == [True, True, True, None, None, None, None]
    assert rows[5]["log_likelihood"] == "NaN" and rows[0]["responsibilities"] is None
    assert rows[3]["responsibilities"] == {"0": 0.9, "1": 0.1}
    assert rows[6]["responsibilities"] == {"0": 0.1, "1": 0.2, "2": 0.7}


def test_flush_makes_one_part_and_empty_flush_none(tmp_path):
    out = tmp_path / "o"
    sink = ParquetSink(out, row_group_size=4)
    assert sink.position() == {"path": str(out), "parts": 0}
    sink.write_columns({"a": np.arange(10.0)})  # two row groups of 4 go to the hidden temporary part
    assert _part_names(out) == [".part-00000001.parquet.tmp"]
    assert sink.position()["parts"] == 0
    sink.flush()
    sink.flush()
    assert sink.position()["parts"] == 1 and _part_names(out) == ["part-00000001.parquet"]
    md = pq.ParquetFile(out / "part-00000001.parquet").metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [4, 4, 2]
    sink.close()
    sink.close()
    with pytest.raises(ConnectorError, match="closed"):
        sink.write_columns({"a": np.arange(1.0)})


def test_flush_fsyncs_part_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    sink = ParquetSink(tmp_path / "o")
    sink.write_columns({"a": np.arange(3.0)})
    sink.flush()
    # the new directory's entry in its parent, then the part's bytes, then its name
    assert synced == [str(tmp_path), str(tmp_path / "o" / ".part-00000001.parquet.tmp"), str(tmp_path / "o")]


def test_restore_discards_later_parts_temp_file_and_buffer(tmp_path):
    out = tmp_path / "o"
    sink = ParquetSink(out, row_group_size=2)
    sink.write_columns({"a": np.array([0.0, 1.0])})
    sink.flush()
    saved = json.loads(json.dumps(sink.position()))
    sink.write_columns({"a": np.array([2.0])})
    sink.flush()
    sink.write_columns({"a": np.array([3.0, 4.0, 5.0])})  # a temporary part with one row group, one row buffered
    assert ".part-00000003.parquet.tmp" in os.listdir(out)
    sink.restore(saved)
    assert _part_names(out) == ["part-00000001.parquet"] and sink.position() == saved
    sink.write_columns({"a": np.array([6.0])})
    sink.close()
    assert pq.read_table(out).column("a").to_pylist() == [0.0, 1.0, 6.0]
    # a crashed writer's leftovers: a later part and a temporary file; a new sink restores past them
    (out / ".part-00000004.parquet.tmp").write_bytes(b"PAR1 half a file")
    fresh = ParquetSink(out)
    assert fresh.position()["parts"] == 2 and ".part-00000004.parquet.tmp" not in os.listdir(out)
    fresh.restore(saved)
    assert _part_names(out) == ["part-00000001.parquet"]
    fresh.restore({"path": str(out), "parts": 0})
    assert _part_names(out) == []
    fresh.write_columns({"b": np.array(["new schema"], dtype=object)})  # restored to nothing: any schema
    fresh.close()
    assert pq.read_table(out).to_pylist() == [{"b": "new schema"}]


def test_restore_errors(tmp_path):
    sink = ParquetSink(tmp_path / "o")
    sink.restore(None)
    with pytest.raises(PositionError, match="missing"):
        sink.restore({"path": str(tmp_path / "o"), "parts": 2})
    with pytest.raises(PositionError, match="this sink writes"):
        sink.restore({"path": str(tmp_path / "other"), "parts": 0})
    with pytest.raises(PositionError, match="keys"):
        sink.restore({"size": 0})
    with pytest.raises(PositionError, match="non-negative int"):
        sink.restore({"path": str(tmp_path / "o"), "parts": -1})
    with pytest.raises(ValueError, match="row_group_size"):
        ParquetSink(tmp_path / "p", row_group_size=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConnectorError, match="not a directory"):
        ParquetSink(tmp_path / "file")


def test_readers_read_parts_in_order_and_skip_the_temporary_part(tmp_path):
    out = tmp_path / "o"
    sink = ParquetSink(out, row_group_size=50)
    batches = [_batch(k) for k in range(12)]  # parts 1..12 (> 9: names must sort numerically)
    for cols in batches:
        sink.write_columns(cols)
        sink.flush()
    sink.write_columns(_batch(99))  # in the hidden temporary part, not yet durable
    assert any(n.startswith(".part-") for n in os.listdir(out))
    expected = _expected(batches)
    assert _rows(pq.read_table(out)) == expected
    assert _rows(ds.dataset(out, format="parquet").to_table()) == expected
    sink.close()


def test_sigkill_then_restore_gives_the_uninterrupted_files(tmp_path):
    """A real writer process is SIGKILLed once a seeded number of parts is on disk, one or two flushes
    after its last saved position and mid-write of the next part (it never waits for us); a new process
    restores the saved position (deleting the later parts and the temporary one) and finishes.  Every
    part file is byte-identical to an uninterrupted writer's, and the table equals the batches written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        kill_at = SAVE_EVERY * int(rng.integers(1, 4)) + int(rng.integers(1, SAVE_EVERY))  # parts on disk
        out, posfile = tmp_path / f"out{seed}", str(tmp_path / f"pos{seed}.json")
        proc = subprocess.Popen([sys.executable, __file__, str(out), posfile, "1000000"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and sum(n.startswith("part-") for n in os.listdir(out)) >= kill_at:
                break
            time.sleep(0.002)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        with open(posfile) as fh:
            saved = json.load(fh)
        on_disk = sum(n.startswith("part-") for n in os.listdir(out))
        assert saved["sink"]["parts"] == saved["k"] < on_disk  # parts beyond the saved position exist
        # restoring (here, then again in the continuing process) leaves exactly the saved parts
        ParquetSink(out, row_group_size=ROW_GROUP).restore(saved["sink"])
        assert _part_names(out) == [f"part-{i:08d}.parquet" for i in range(1, saved["k"] + 1)]
        n_batches = saved["k"] + 6
        done = subprocess.run([sys.executable, __file__, str(out), posfile, str(n_batches)], env=env,
                              capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

        reference = tmp_path / f"ref{seed}"
        _run_writer(str(reference), str(tmp_path / f"refpos{seed}.json"), n_batches)
        names = _part_names(out)
        assert names == _part_names(reference) == [f"part-{i:08d}.parquet" for i in range(1, n_batches + 1)]
        for name in names:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
        assert _rows(pq.read_table(out)) == _expected([_batch(k) for k in range(n_batches)])


def test_config_parquet_sink_and_source_carry(tmp_path):
    from online_gmm.config import ConfigError, build_sink, build_source, load_config

    pq.write_table(pa.table({"x": [1.0, 2.0], "id": ["a", "b"]}), tmp_path / "in.parquet")
    cfg_path = tmp_path / "pipeline.toml"
    cfg_path.write_text(
        '[source]\ntype = "parquet"\npath = "in.parquet"\ncolumns = ["x"]\ncarry = ["id"]\n\n'
        '[sinks.scores]\ntype = "parquet"\npath = "out/scores"\nrow_group_size = 1000\n')
    cfg = load_config(cfg_path)
    sink = build_sink(cfg["sinks"]["scores"])
    assert isinstance(sink, ParquetSink) and sink.row_group_size == 1000
    assert sink.path == str(tmp_path / "out" / "scores") and (tmp_path / "out" / "scores").is_dir()
    src = build_source(cfg["source"])
    batch = src.read(10)
    sink.write_columns({"x": batch.X[:, 0], **batch.columns})
    sink.close()
    assert pq.read_table(tmp_path / "out" / "scores").column("id").to_pylist() == ["a", "b"]
    cfg_path.write_text('[source]\ntype = "parquet"\npath = "in.parquet"\ncolumns = ["x"]\n\n'
                        '[sinks.scores]\ntype = "parquet"\npath = "o"\nrow_group_size = 0\n')
    with pytest.raises(ConfigError, match="row_group_size"):
        load_config(cfg_path)


if __name__ == "__main__":  # the writer process of the SIGKILL test (PYTHONPATH: the repository root)
    _run_writer(sys.argv[1], sys.argv[2], int(sys.argv[3]))


def test_encodings_follow_each_columns_repetition_and_constant_strings_round_trip(tmp_path):
    """Columns whose first rows repeat (a file name, a cluster id) are dictionary encoded, columns of
    distinct values (ids, timestamps, log-likelihoods) plain; a column holding one str object n times
    (the pipeline's constant columns) and one of equal but distinct str objects give the same values."""
    n = 5000
    same = np.empty(n, dtype=object)
    same.fill("data/events-é.jsonl")
    equal = np.array(["".join(("data/", "events-é", ".jsonl")) for _ in range(n)], dtype=object)
    assert equal[0] is not equal[1]
    ts = np.array([f"2026-12-04T00:00:{i:05d}" for i in range(n)], dtype=object)
    rng = np.random.default_rng(0)
    cols = {"file": same, "copy": equal, "ts": ts, "id": np.arange(n), "cluster": rng.integers(0, 4, n),
            "log_likelihood": rng.normal(size=n), "x": rng.normal(size=(n, 2))}
    sink = ParquetSink(tmp_path / "out", row_group_size=1000)
    sink.write_columns(cols)
    sink.close()
    table = pq.read_table(tmp_path / "out")
    assert table.column("file").to_pylist() == table.column("copy").to_pylist() == equal.tolist()
    assert table.column("ts").to_pylist() == ts.tolist()
    assert table.schema.field("file").type == pa.string()
    meta = pq.ParquetFile(tmp_path / "out" / "part-00000001.parquet").metadata
    encodings = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j).encodings
                 for j in range(meta.num_columns)}
    for name in ("file", "copy", "cluster"):
        assert "RLE_DICTIONARY" in encodings[name], (name, encodings[name])
    for name in ("ts", "id", "log_likelihood", "x.list.element"):
        assert "RLE_DICTIONARY" not in encodings[name], (name, encodings[name])
