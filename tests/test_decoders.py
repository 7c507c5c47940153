"""Decoders: every bad record rejected with a reason naming the field and value; good ones pass."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from connectors import csv_decoder
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder, RawArrayDecoder


@pytest.fixture(params=["pyarrow", "loadtxt"])
def csv_backend(request, monkeypatch):
    """Run CSV tests with the pyarrow batch parser and with the numpy.loadtxt fallback."""
    if request.param == "pyarrow":
        pytest.importorskip("pyarrow.csv")
    else:
        monkeypatch.setattr(csv_decoder, "_ARROW", [None])
    return request.param


def _dec(decoder, raws):
    X, good, rejects = decoder.decode_many(raws)
    assert X.dtype == np.float64 and X.shape == (len(good), decoder.n_features)
    assert sorted(good + [i for i, _ in rejects]) == list(range(len(raws)))
    return X, good, dict(rejects)


def test_protocol_is_satisfied():
    for dec in (JSONDecoder(["a"]), CSVDecoder([0]), RawArrayDecoder(2)):
        assert isinstance(dec, Decoder)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b'{"a": 1, "b": {"c": ', "malformed JSON"),
        (b"[1, 2]", "not a JSON object: [1, 2]"),
        (b'"text"', "not a JSON object: 'text'"),
        (b'{"b": {"c": 1}}', "field 'a' is missing"),
        (b'{"a": null, "b": {"c": 1}}', "field 'a' is null"),
        (b'{"a": "1.5", "b": {"c": 1}}', "field 'a' is not a number: '1.5'"),
        (b'{"a": true, "b": {"c": 1}}', "field 'a' is a bool, not a number: True"),
        (b'{"a": NaN, "b": {"c": 1}}', "field 'a' is not finite: NaN"),
        (b'{"a": -Infinity, "b": {"c": 1}}', "field 'a' is not finite: -Infinity"),
        (b'{"a": 1e999, "b": {"c": 1}}', "field 'a' is not finite: inf"),
        (b'{"a": 1, "b": {"c": -1e999}}', "field 'b.c' is not finite: -inf"),
        (b'{"a": 1, "b": 7}', "field 'b.c': 'b' is not an object: 7"),
        (b'{"a": 1, "b": {"c": [1]}}', "field 'b.c' is not a number: [1]"),
        (b'{"a": ' + b"9" * 400 + b', "b": {"c": 1}}', "field 'a' is too large for float64"),
        (b'{"a": \xff1, "b": {"c": 1}}', "invalid UTF-8 at byte 6"),
        (b"", "malformed JSON"),
    ],
)
def test_json_rejects_with_reason(raw, fragment):
    good = b'{"a": 2, "b": {"c": 3.5}}'
    X, idx, rejects = _dec(JSONDecoder(["a", "b.c"]), [good, raw, good])
    assert idx == [0, 2]
    np.testing.assert_array_equal(X, [[2.0, 3.5], [2.0, 3.5]])
    assert fragment in rejects[1]


def test_json_long_values_are_shortened_in_reasons():
    raw = json.dumps({"a": "x" * 10_000}).encode()
    _, _, rejects = _dec(JSONDecoder(["a"]), [raw])
    assert len(rejects[0]) < 200 and rejects[0].endswith("...")


def test_json_missing_nan_is_opt_in_but_literal_nan_still_rejected():
    raws = [b'{"a": 1}', b'{"a": null, "b": 2}', b'{"a": NaN, "b": 2}', b'{"b": Infinity}']
    X, good, rejects = _dec(JSONDecoder(["a", "b"], missing="nan"), raws)
    assert good == [0, 1]
    np.testing.assert_array_equal(X, [[1.0, np.nan], [np.nan, 2.0]])
    assert rejects == {2: "field 'a' is not finite: NaN", 3: "field 'b' is not finite: Infinity"}


def test_json_ints_floats_and_tuple_paths():
    dec = JSONDecoder([("a.b",), "c.d.e"])
    X, good, _ = _dec(dec, [b'{"a.b": 3, "c": {"d": {"e": -2.25}}}'])
    np.testing.assert_array_equal(X, [[3.0, -2.25]])
    assert dec.feature_names == ["a.b", "c.d.e"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fields": []}, "fields must name at least one field"),
        ({"fields": ["a", ""]}, "each field must be a non-empty str"),
        ({"fields": ["a..b"]}, "empty path component"),
        ({"fields": ["a"], "missing": "zero"}, "missing must be one of .* got 'zero'"),
    ],
)
def test_json_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JSONDecoder(**kwargs)


def test_json_unknown_setting_rejected():
    with pytest.raises(TypeError, match="fillna"):
        JSONDecoder(["a"], fillna=True)


def test_json_same_result_batched_or_one_by_one():
    raws = [b'{"a": 1}', b"{", b'{"a": 2}', b'{"a": 1e400}', b'{"a": 3}']
    dec = JSONDecoder(["a"])
    X, good, rejects = dec.decode_many(raws)
    singles = [dec.decode_many([r]) for r in raws]
    assert good == [i for i, s in enumerate(singles) if s[1] == [0]]
    np.testing.assert_array_equal(X, np.vstack([s[0] for s in singles]))
    assert [r for _, r in rejects] == [s[2][0][1] for s in singles if s[2]]


def test_csv_by_name_and_index(csv_backend):
    dec = CSVDecoder(["y", 0], header=["x", "y", "label"])
    X, good, rejects = _dec(dec, [b"1,2,a", b" 3 , 4 ,b", b"5,6,c\r"])
    np.testing.assert_array_equal(X, [[2, 1], [4, 3], [6, 5]])
    assert dec.feature_names == ["y", "x"]


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"1,abc,z", "column 'y' is not a number: 'abc'"),
        (b"1,,z", "column 'y' is empty"),
        (b"1,nan,z", "column 'y' is not finite: 'nan'"),
        (b"1,-inf,z", "column 'y' is not finite: '-inf'"),
        (b"1,2", "expected 3 cells as in the header, got 2"),
        (b"1,2,3,4", "expected 3 cells as in the header, got 4"),
        (b"1,1_000,z", "column 'y' is not a number: '1_000'"),
        (b"1,\xfe,z", "invalid UTF-8 at byte 2"),
        (b'1,"2,z', "malformed CSV row"),
    ],
)
def test_csv_rejects_with_reason(raw, fragment, csv_backend):
    dec = CSVDecoder(["x", "y"], header=["x", "y", "label"])
    X, good, rejects = _dec(dec, [b"1,2,a", raw, b"3,4,b"])
    assert good == [0, 2]
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert fragment in rejects[1]


def test_csv_quoted_cells_and_delimiter(csv_backend):
    dec = CSVDecoder([1, 2], delimiter=";")
    X, good, rejects = _dec(dec, [b'"a;b";1.5;2', b"c;3;4"])
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4]])


def test_csv_missing_nan(csv_backend):
    dec = CSVDecoder([0, 1], missing="nan")
    X, good, rejects = _dec(dec, [b"1,", b"2", b"nan,1"])
    np.testing.assert_array_equal(X, [[1, np.nan], [2, np.nan]])
    assert rejects == {2: "column '0' is not finite: 'nan'"}


def test_csv_bad_settings():
    with pytest.raises(ValueError, match="header must be given"):
        CSVDecoder(["x"])
    with pytest.raises(ValueError, match="column 'z' is not in the header"):
        CSVDecoder(["z"], header=["x"])
    with pytest.raises(ValueError, match="delimiter must be a single character.*got ';;'"):
        CSVDecoder([0], delimiter=";;")
    with pytest.raises(ValueError, match="column index 5 is out of range"):
        CSVDecoder([5], header=["a"])


@pytest.mark.parametrize("dtype, fmt", [("float64", "<d"), ("float32", "<f")])
def test_raw_arrays(dtype, fmt):
    dec = RawArrayDecoder(2, dtype=dtype)
    good = struct.pack(f"{fmt[0]}2{fmt[1]}", 1.5, -2.0)
    nan = struct.pack(f"{fmt[0]}2{fmt[1]}", 1.0, float("nan"))
    inf = struct.pack(f"{fmt[0]}2{fmt[1]}", float("inf"), 1.0)
    X, idx, rejects = _dec(dec, [good, good[:-1], nan, inf, good + b"\0", good])
    assert idx == [0, 5]
    np.testing.assert_array_equal(X, [[1.5, -2.0], [1.5, -2.0]])
    size = 2 * struct.calcsize(fmt)
    assert rejects[1] == f"expected {size} bytes (2 {dtype} values), got {size - 1}"
    assert rejects[2] == "feature 'x1' is not finite: nan"
    assert rejects[3] == "feature 'x0' is not finite: inf"


def test_raw_array_output_does_not_alias_input():
    buf = bytearray(np.array([1.0, 2.0]).tobytes())
    X, _, _ = RawArrayDecoder(2).decode_many([buf])
    buf[:] = np.array([9.0, 9.0]).tobytes()
    np.testing.assert_array_equal(X, [[1.0, 2.0]])


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError, match="raws must contain bytes"):
        RawArrayDecoder(1).decode_many([1.0])
    with pytest.raises(TypeError, match="raws must contain bytes"):
        JSONDecoder(["a"]).decode_many([123])


def test_json_decoder_speed_close_to_json_loads():
    """decode_many costs barely more than a bare json.loads loop (generous bound for CI noise)."""
    import time

    rng = np.random.default_rng(0)
    raws = [json.dumps({"id": i, "a": float(v[0]), "b": float(v[1]), "c": float(v[2])}).encode()
            for i, v in enumerate(rng.normal(size=(20_000, 3)))]
    dec = JSONDecoder(["a", "b", "c"])

    def bare():
        rows = []
        for r in raws:
            o = json.loads(r)
            rows.append([o["a"], o["b"], o["c"]])
        return np.array(rows)

    def ours():
        return dec.decode_many(raws)[0]

    np.testing.assert_array_equal(bare(), ours())
    t_bare = min(_timed(bare, time) for _ in range(3))
    t_ours = min(_timed(ours, time) for _ in range(3))
    assert t_ours < 1.5 * t_bare, (t_ours, t_bare)


def _timed(fn, time):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_csv_batch_parsers_agree_with_row_by_row(csv_backend):
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(500, 3))
    raws = [f"{a!r},{b!r},{c!r}".encode() for a, b, c in rows.tolist()]
    X, good, rejects = CSVDecoder([2, 0], header=["a", "b", "c"]).decode_many(raws)
    np.testing.assert_array_equal(X, rows[:, [2, 0]])
    raws[7] = b"1,2,x"
    X, good, rejects = CSVDecoder([2, 0], header=["a", "b", "c"]).decode_many(raws)
    assert rejects == [(7, "column 'c' is not a number: 'x'")] and len(good) == 499
