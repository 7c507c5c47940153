"""Tests for online_gmm.checkpoint: atomic store, corruption fallback, retention, no pickle."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from online_gmm import OnlineGaussianMixture
from online_gmm.checkpoint import (FORMAT_VERSION, CheckpointError, CheckpointStore, CheckpointWarning,
                                   pack, read_checkpoint, unpack, write_checkpoint)
from online_gmm.refit import BICHistory, Reservoir


def sample_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "f64": rng.normal(size=(7, 3)),
        "f32": rng.normal(size=5).astype(np.float32),
        "i64": rng.integers(-10**12, 10**12, size=4),
        "u8": rng.integers(0, 255, size=(2, 2, 2), dtype=np.uint8),
        "bool": rng.random(6) < 0.5,
        "c128": rng.normal(size=3) + 1j * rng.normal(size=3),
        "scalar": np.float64(np.pi) * np.ones(()),
        "empty": np.empty((0, 3)),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324]),
        "big_endian": np.arange(3, dtype=">i4"),
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
    }


SAMPLE_META = {"n_seen": 12345, "threshold": 3.25, "offsets": {"topic-0": [1, 2]},
               "nested": {"a": [1.5, None, True, "x"]}, "tiny": 1e-310, "pi": float(np.pi)}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), k


def newest(store: CheckpointStore):
    return store.checkpoints()[-1][1]


# ================================================================== round trip
def test_round_trip_is_exact(tmp_path):
    store = CheckpointStore(tmp_path)
    arrays = sample_arrays()
    path = store.save(arrays, SAMPLE_META)
    assert path.name == "ckpt-000000001.npz" and path.exists()
    got_arrays, got_meta, got_path = store.load_latest()
    assert got_path == path
    assert_bitwise_equal(arrays, got_arrays)
    assert got_meta == SAMPLE_META
    # a fresh store on the same directory reads the same
    again = CheckpointStore(tmp_path).load_latest()
    assert_bitwise_equal(arrays, again[0])


def test_empty_directory_is_a_fresh_start(tmp_path):
    assert CheckpointStore(tmp_path / "new").load_latest() is None
    assert (tmp_path / "new").is_dir()


def test_sequence_numbers_monotonic_and_retention(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    paths = [store.save({"i": np.array([i])}, {"i": i}) for i in range(6)]
    assert [p.name for p in paths] == [f"ckpt-{i:09d}.npz" for i in range(1, 7)]
    assert [seq for seq, _ in store.checkpoints()] == [4, 5, 6]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in paths[3:]]
    arrays, meta, _ = store.load_latest()
    assert meta == {"i": 5} and arrays["i"].tolist() == [5]
    # a new store continues the numbering
    assert CheckpointStore(tmp_path, keep=3).save({}, {}).name == "ckpt-000000007.npz"


def test_keep_one(tmp_path):
    store = CheckpointStore(tmp_path, keep=1)
    for i in range(3):
        store.save({"x": np.arange(i + 1)}, {})
    assert [p.name for _, p in store.checkpoints()] == ["ckpt-000000003.npz"]


def test_single_file_with_manifest(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save({"x": np.arange(3.0)}, {"k": 1})
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["__manifest__.npy", "x.npy"]
    with np.load(path, allow_pickle=False) as npz:
        manifest = json.loads(npz["__manifest__"].tobytes())
    assert manifest["format"] == FORMAT_VERSION and manifest["seq"] == 1
    assert manifest["arrays"] == {"x": {"dtype": "<f8", "shape": [3]}}
    assert len(manifest["checksum"]) == 64


def test_compressed_store_round_trip(tmp_path):
    store = CheckpointStore(tmp_path, compress=True)
    arrays = sample_arrays(3)
    store.save(arrays, SAMPLE_META)
    got, meta, _ = store.load_latest()
    assert_bitwise_equal(arrays, got)
    assert meta == SAMPLE_META


# ================================================================== crashes and corruption
def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    good = store.save({"x": np.arange(3.0)}, {"v": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save({"x": np.arange(4.0)}, {"v": 2})
    monkeypatch.undo()
    # a temporary file a real crash would have left behind
    stray = tmp_path / ".ckpt-abc123.tmp"
    stray.write_bytes(b"PK\x03\x04 half a zip")
    arrays, meta, path = store.load_latest()
    assert path == good and meta == {"v": 1}
    assert not stray.exists()                         # cleaned
    assert [p.name for _, p in store.checkpoints()] == [good.name]


def test_truncated_newest_falls_back_with_warning(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"x": np.arange(10.0)}, {"v": 1})
    bad = store.save({"x": np.arange(1000.0)}, {"v": 2})
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.warns(CheckpointWarning, match=bad.name):
        arrays, meta, path = store.load_latest()
    assert meta == {"v": 1} and path.name == "ckpt-000000001.npz"
    assert np.array_equal(arrays["x"], np.arange(10.0))


@pytest.mark.parametrize("where", ["array", "manifest"])
def test_bit_flip_detected(tmp_path, where):
    store = CheckpointStore(tmp_path)
    store.save({"x": np.arange(50.0)}, {"v": 1})
    bad = store.save({"x": np.arange(50.0) * 2}, {"v": 2})
    raw = bytearray(bad.read_bytes())
    with zipfile.ZipFile(bad) as zf:
        info = zf.getinfo("x.npy" if where == "array" else "__manifest__.npy")
    # the member's data starts after its local header (30 bytes + name + extra field)
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    pos = start + info.compress_size - 9                 # inside the payload, not the npy header
    raw[pos] ^= 0x10
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)
    with pytest.warns(CheckpointWarning, match=bad.name):
        _, meta, _ = store.load_latest()
    assert meta == {"v": 1}


def test_checksum_catches_consistent_tampering(tmp_path):
    """A file rewritten with valid zip CRCs but altered content fails the manifest checksum."""
    path = tmp_path / "ckpt-000000001.npz"
    write_checkpoint(path, {"x": np.arange(4.0)}, {"v": 1}, seq=1)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    entries["x"] = entries["x"] + 1.0
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(path)


def test_missing_entry_and_version_mismatch(tmp_path):
    path = tmp_path / "ckpt-000000001.npz"
    write_checkpoint(path, {"x": np.arange(4.0), "y": np.ones(2)}, {"v": 1}, seq=1)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    np.savez(path, **{k: v for k, v in entries.items() if k != "y"})
    with pytest.raises(CheckpointError, match="do not match the manifest"):
        read_checkpoint(path)
    manifest = json.loads(entries["__manifest__"].tobytes())
    manifest["format"] = FORMAT_VERSION + 1
    entries["__manifest__"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match="format version"):
        read_checkpoint(path)
    np.savez(path, x=np.arange(3))
    with pytest.raises(CheckpointError, match="no __manifest__"):
        read_checkpoint(path)


def test_missing_file_falls_back(tmp_path):
    store = CheckpointStore(tmp_path)
    first = store.save({"x": np.zeros(1)}, {"v": 1})
    second = store.save({"x": np.ones(1)}, {"v": 2})
    second.unlink()
    assert store.load_latest()[2] == first
    with pytest.raises(CheckpointError, match="unreadable"):
        read_checkpoint(second)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    store = CheckpointStore(tmp_path)
    paths = [store.save({"x": np.arange(5.0)}, {"v": i}) for i in range(2)]
    for p in paths:
        p.write_bytes(b"not a zip at all")
    with pytest.warns(CheckpointWarning):
        with pytest.raises(CheckpointError, match="no usable checkpoint .*2 file"):
            store.load_latest()


class _Exploit:
    """Unpickling this would set a flag (a stand-in for arbitrary code)."""

    def __reduce__(self):
        return (exec, ("import os; os.environ['ONLINE_GMM_PWNED'] = '1'",))


def test_object_arrays_are_rejected_not_unpickled(tmp_path, monkeypatch):
    monkeypatch.delenv("ONLINE_GMM_PWNED", raising=False)
    store = CheckpointStore(tmp_path)
    good = store.save({"x": np.arange(3.0)}, {"v": 1})
    # forge the next checkpoint: a valid-looking manifest plus a pickled object array
    evil = tmp_path / "ckpt-000000002.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = _Exploit()
    manifest = {"format": FORMAT_VERSION, "seq": 2, "created": 0.0, "meta": {},
                "arrays": {"x": {"dtype": "|O", "shape": [1]}}, "checksum": "0" * 64}
    np.savez(evil, x=obj, __manifest__=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError):
        read_checkpoint(evil)
    with pytest.warns(CheckpointWarning, match=evil.name):
        _, meta, path = store.load_latest()
    assert path == good
    assert "ONLINE_GMM_PWNED" not in os.environ
    # sanity check: the payload really runs when unpickled
    pickle.loads(pickle.dumps(obj))
    assert os.environ.pop("ONLINE_GMM_PWNED") == "1"


def test_object_and_string_arrays_are_not_written(tmp_path):
    store = CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="'bad' must have a numeric or boolean dtype"):
        store.save({"bad": np.array([{"a": 1}], dtype=object)}, {})
    with pytest.raises(CheckpointError, match="numeric or boolean dtype, got dtype <U"):
        store.save({"bad": np.array(["text"])}, {})
    with pytest.raises(CheckpointError, match="JSON-able"):
        store.save({}, {"x": object()})
    with pytest.raises(CheckpointError, match="array names"):
        store.save({"__manifest__": np.zeros(1)}, {})
    assert store.checkpoints() == [] and os.listdir(tmp_path) == []


def test_bad_keep():
    with pytest.raises(ValueError, match="keep must be an integer >= 1, got 0"):
        CheckpointStore("unused-dir-never-created", keep=0)


# ================================================================== several components in one file
def test_pack_model_reservoir_history_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)) + np.repeat([[0, 0], [8, 8]], 300, axis=0)
    est = OnlineGaussianMixture(2, random_state=0, warm_up=200, warm_up_n_init=1)
    for part in np.array_split(X, 4):
        est.partial_fit(part)
    res = Reservoir(100, seed=1)
    res.add(X)
    hist = BICHistory([{"n_seen": 600, "time": 1.5, "chosen_k": 2,
                        "candidates": [{"k": 2, "bic": 1.0, "aic": 2.0, "loglik": -3.0}]}])
    parts = {"model": est._online.to_arrays(), "reservoir": res.to_arrays(),
             "history": hist.to_arrays(), "threshold": ({"window": np.arange(5.0)}, {"q": 0.99}),
             "positions": ({}, {"file.csv": 1234, "topic": {"0": 17, "1": 4}}),
             "counters": ({}, {"n_scored": 600, "n_anomalies": 3})}
    store = CheckpointStore(tmp_path)
    store.save(*pack(parts))
    arrays, meta, _ = store.load_latest()
    back = unpack(arrays, meta)
    assert set(back) == set(parts)
    for name, (a, m) in parts.items():
        assert_bitwise_equal(a, back[name][0])
        assert json.loads(json.dumps(m)) == back[name][1]
    # and the components restore exactly
    res2 = Reservoir.from_arrays(*back["reservoir"])
    batch = rng.normal(size=(300, 2))
    res.add(batch)
    res2.add(batch)
    assert np.array_equal(res.data(), res2.data())
    assert BICHistory.from_arrays(*back["history"]).rows == hist.rows
    est2 = OnlineGaussianMixture(2, random_state=0, warm_up=200, warm_up_n_init=1).partial_fit(X[:10])
    est2._online.load_arrays(*back["model"])
    assert est2._online.stats == est._online.stats


def test_pack_rejects_bad_part_names_and_unpack_checks():
    with pytest.raises(ValueError, match="part names"):
        pack({"a/b": ({}, {})})
    with pytest.raises(ValueError, match="must be an \\(arrays, meta\\) pair"):
        pack({"a": {"x": np.zeros(1)}})
    with pytest.raises(CheckpointError, match="no 'parts'"):
        unpack({}, {"v": 1})
    with pytest.raises(CheckpointError, match="belongs to no packed part"):
        unpack({"zzz/x": np.zeros(1)}, {"parts": {"a": {}}})


def test_a_reader_never_deletes_a_save_in_flight(tmp_path):
    """`inspect` while a job runs: a store that only reads must leave the writer's temporary file."""
    writer = CheckpointStore(tmp_path)
    good = writer.save({"x": np.arange(3.0)}, {"v": 1})
    in_flight = tmp_path / ".ckpt-inflight.tmp"
    in_flight.write_bytes(b"PK\x03\x04 being written")
    _, meta, path = CheckpointStore(tmp_path).load_latest()
    assert path == good and meta == {"v": 1}
    assert in_flight.exists()
    writer.load_latest()                       # the writer itself cleans what a crash left
    assert not in_flight.exists()


def test_lock_refuses_another_process_and_dies_with_it(tmp_path):
    """The directory lock: a second process is refused (naming the holder); SIGKILL releases it."""
    import signal
    import subprocess
    import sys

    from online_gmm.checkpoint import CheckpointLockedError

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from online_gmm.checkpoint import CheckpointStore; "
         f"CheckpointStore({str(tmp_path)!r}).lock(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"      # the event: the lock is held
        with pytest.raises(CheckpointLockedError, match=rf"in use by another process \(pid {holder.pid}\)"):
            CheckpointStore(tmp_path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    store = CheckpointStore(tmp_path)
    store.lock()                                # released by the kernel when the holder died
    again = CheckpointStore(tmp_path)
    again.lock()                                # shared within one process
    again.unlock()
    store.unlock()


def test_fresh_start_record_round_trip(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_start() is None
    store.save_start({"fingerprint": "f", "sink_positions": {"scores": {"path": "p", "size": 3}}})
    assert store.load_start()["sink_positions"]["scores"]["size"] == 3
    assert store.checkpoints() == []           # not a checkpoint
    (tmp_path / "fresh-start.json").write_text("{not json")
    with pytest.warns(CheckpointWarning, match="fresh-start.json"):
        assert store.load_start() is None


# ================================================================== manifest encoding (meta encoded once)
def _reference_checkpoint_bytes(arrays, meta, seq, compress=False):
    """The writer before the meta was encoded once: round trip the meta, canonical JSON of the body
    for the checksum, canonical JSON of the manifest for the stored bytes (kept as the reference)."""
    import hashlib
    import io

    def canonical(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")

    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    body = {"format": FORMAT_VERSION, "seq": int(seq), "created": __import__("time").time(),
            "meta": meta,
            "arrays": {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()}}
    h = hashlib.sha256()
    h.update(canonical(body))
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(b"\x00" + name.encode("utf-8") + b"\x00")
        h.update(arr.dtype.str.encode("ascii") + repr(arr.shape).encode("ascii"))
        h.update(arr.tobytes())
    manifest = {**body, "checksum": h.hexdigest()}
    entries = dict(arrays)
    entries["__manifest__"] = np.frombuffer(canonical(manifest), dtype=np.uint8)
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **entries)
    return buf.getvalue()


class _ListSub(list):
    pass


def _metas():
    from collections import OrderedDict, defaultdict, namedtuple
    Point = namedtuple("Point", "x y")
    plain = {
        "z_last": 1, "a_first": {"nested": {"deeper": [1, 2.5, None, True, False, "s"]}},
        "floats": [0.1, -0.0, 1e-310, 5e-324, 1.7976931348623157e308, 1e16, float(np.pi)],
        "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"),
        "unicode": "héllo ✓ \U0001f600 \ud800 \"quoted\" \\ \n\t\x00", "ключ ✓": "value",
        "tuple": (1, (2.0, "x"), [3, {"k": (4,)}]), "rows": [[1.0, 2.0], [3.5, float("nan")]] * 50,
        "rows_of_tuples": [(1, 2), (3.0, None)], "mixed_rows": [[1, 2], [3, [4]], {"k": [5]}],
        "big": 10**40, "neg": -(2**63), "empty": {}, "empty_list": [], "empty_str": "",
        "np_float": np.float64(0.1) * 3, "np_floats": [np.float64(2.5)],
        "\x00meta\x00": "\x00meta\x00", "slot_like": '"\\u0000meta\\u0000"',
        "timeline": {"seconds": [i * 0.37 for i in range(40)], "k": list(range(40)),
                     "threshold": [None] * 20 + [1.25] * 20},
    }
    return {
        "plain": plain,
        "top_level_list": [plain, 1, "x"],
        "scalar": 3.5,
        "int_keys": {"labels": {2: "a", 10: "b", -1: "c"}},
        "float_bool_none_keys": {"k": {2.5: 1, True: 2, None: 3}, "deep": [{"x": {1.5: [1]}}]},
        "mixed_keys": {"m": {1: "a", "b": 2, None: 3, 2.5: 4}},
        "colliding_keys": {"d": {1: "int", "1": "str"}},
        "str_subclass_key": {"s": {np.str_("b"): 1, "a": 2}},
        "ordered_dict": OrderedDict([("b", 1), ("a", OrderedDict([("y", 2), ("x", 3)]))]),
        "defaultdict": {"d": defaultdict(list, {"b": [1], "a": [2]})},
        "namedtuple": {"p": Point(1, 2.5), "rows": [Point(1, 2)]},
        "list_subclass": {"l": _ListSub([3, 1, {"b": 1, "a": 2}])},
    }


@pytest.mark.parametrize("name", sorted(_metas()))
@pytest.mark.parametrize("compress", [False, True])
def test_written_bytes_identical_to_the_round_trip_encoding(tmp_path, monkeypatch, name, compress):
    import io
    import time as time_module
    meta = _metas()[name]
    arrays = sample_arrays()
    monkeypatch.setattr(time_module, "time", lambda: 1234567890.123456)   # "created" and zip dates
    expected = _reference_checkpoint_bytes(arrays, meta, seq=42, compress=compress)
    buf = io.BytesIO()
    write_checkpoint(buf, arrays, meta, seq=42, compress=compress)
    assert buf.getvalue() == expected
    path = tmp_path / "c.npz"
    path.write_bytes(buf.getvalue())
    got_arrays, got_meta = read_checkpoint(path)            # checksum recomputed from the parsed file
    assert_bitwise_equal(arrays, got_arrays)
    assert json.dumps(got_meta, sort_keys=True) == json.dumps(json.loads(json.dumps(meta)),
                                                              sort_keys=True)


def test_fast_path_only_for_str_keys_and_plain_containers():
    from online_gmm._checkpoint_file import _str_keys_only
    metas = _metas()
    for name in ("plain", "top_level_list", "scalar"):
        assert _str_keys_only(metas[name]), name                      # one encoding, no round trip
    for name in ("int_keys", "float_bool_none_keys", "str_subclass_key", "ordered_dict",
                 "defaultdict", "namedtuple", "list_subclass"):
        assert not _str_keys_only(metas[name]), name                  # falls back to the round trip


def test_non_str_keys_read_back_with_a_valid_checksum(tmp_path):
    write_checkpoint(tmp_path / "a.npz", {"x": np.zeros(2)}, {"labels": {2: "a", 10: "b"}}, seq=1)
    assert read_checkpoint(tmp_path / "a.npz")[1] == {"labels": {"2": "a", "10": "b"}}
    with np.load(tmp_path / "a.npz") as npz:
        raw = json.loads(bytes(npz["__manifest__"]))
    assert list(raw["meta"]["labels"]) == ["10", "2"]                 # sorted as strings
    mixed = {"m": {1: "a", "b": 2, None: 3, 2.5: 4, False: 5}}       # cannot be sorted as it is
    write_checkpoint(tmp_path / "b.npz", {}, mixed, seq=2)
    assert read_checkpoint(tmp_path / "b.npz")[1] == {"m": {"1": "a", "b": 2, "null": 3, "2.5": 4,
                                                            "false": 5}}
    store = CheckpointStore(tmp_path / "store")
    store.save({"x": np.ones(3)}, {"labels": {3: [1.5], 20: {"k": None}}})
    assert store.load_latest()[1] == {"labels": {"3": [1.5], "20": {"k": None}}}


def test_meta_that_is_not_json_able_raises_the_same_error(tmp_path):
    class Opaque:
        pass

    circular: dict = {}
    circular["self"] = circular
    for meta in ({"x": Opaque()}, {"k": {(1, 2): 3}}, circular, {"a": np.int64(3)},
                 {"m": {1: "a", "b": Opaque()}}, {"s": {1, 2}}):
        with pytest.raises(TypeError if meta is not circular else ValueError) as ref:
            json.dumps(meta)
        with pytest.raises(CheckpointError) as got:
            write_checkpoint(tmp_path / "bad.npz", {"x": np.zeros(1)}, meta)
        assert str(got.value) == f"meta must be JSON-able: {ref.value}"
        assert not (tmp_path / "bad.npz").exists()
