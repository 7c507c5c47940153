"""Arbitrary garbage never escapes a decoder as an exception, and good records mixed in still pass.

The only documented exception of ``decode_many`` is TypeError for non-bytes input, which these
tests never feed.
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import csv_decoder
from connectors.decoders import CSVDecoder, JSONDecoder, RawArrayDecoder

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

garbage = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
    st.lists(st.sampled_from(["1", "2.5", "", "nan", "x", '"', "inf", "1e999", " 3 "]), max_size=5).map(
        lambda cells: ",".join(cells).encode()
    ),
)


def _check(decoder, raws, good_at, expected_rows):
    X, good, rejects = decoder.decode_many(raws)
    assert X.shape == (len(good), decoder.n_features) and X.dtype == np.float64
    assert sorted(good + [i for i, _ in rejects]) == list(range(len(raws)))
    assert all(isinstance(r, str) and r for _, r in rejects)
    assert all(len(r) < 400 for _, r in rejects)
    for i, row in zip(good_at, expected_rows):
        assert i in good, f"good record {raws[i]!r} was rejected: {dict(rejects).get(i)}"
        np.testing.assert_array_equal(X[good.index(i)], row)
    if decoder.missing == "reject" if hasattr(decoder, "missing") else True:
        assert np.isfinite(X).all()
    # batching does not change the outcome
    singles = [decoder.decode_many([r]) for r in raws]
    assert good == [i for i, s in enumerate(singles) if s[1] == [0]]
    if good:
        np.testing.assert_array_equal(X, np.vstack([s[0] for s in singles if s[1]]))


def _mix(data, raws_garbage, good_raws):
    raws = list(raws_garbage)
    good_at = []
    for g in good_raws:
        k = data.draw(st.integers(0, len(raws)))
        raws.insert(k, g)
        good_at = [i + (i >= k) for i in good_at] + [k]
    order = sorted(range(len(good_at)), key=good_at.__getitem__)
    return raws, [good_at[o] for o in order], order


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@FUZZ
@given(st.data(), st.lists(garbage, max_size=8), st.lists(st.tuples(finite, finite), min_size=1, max_size=4),
       st.sampled_from(["reject", "nan"]))
def test_json_decoder_fuzz(data, junk, rows, missing):
    dec = JSONDecoder(["a", "b.c"], missing=missing)
    good_raws = [json.dumps({"a": a, "b": {"c": c}, "z": "pad"}).encode() for a, c in rows]
    raws, good_at, order = _mix(data, junk, good_raws)
    _check(dec, raws, good_at, [rows[o] for o in order])
    X, good, rejects = dec.decode_many(raws)
    if missing == "nan":  # NaN may only come from absent/null fields, never from a literal
        for i, row in zip(good, X):
            obj = json.loads(raws[i])
            values = [obj.get("a"), (obj.get("b") or {}).get("c")]
            for v, x in zip(values, row):
                assert (v is None) == bool(np.isnan(x)), (raws[i], row)
        assert not np.isinf(X).any()


@FUZZ
@given(st.data(), st.lists(garbage, max_size=8), st.lists(st.tuples(finite, finite), min_size=1, max_size=4),
       st.booleans(), st.booleans())
def test_csv_decoder_fuzz(data, junk, rows, with_header, use_loadtxt):
    saved = csv_decoder._ARROW[:]
    if use_loadtxt:  # exercise the numpy.loadtxt fallback as well as pyarrow
        csv_decoder._ARROW[:] = [None]
    try:
        _csv_fuzz_case(data, junk, rows, with_header)
    finally:
        csv_decoder._ARROW[:] = saved


def _csv_fuzz_case(data, junk, rows, with_header):
    header = ["x", "y", "label"] if with_header else None
    dec = CSVDecoder(["x", "y"] if with_header else [0, 1], header=header)
    good_raws = [f"{a!r},{b!r},lbl".encode() for a, b in rows]
    raws, good_at, order = _mix(data, junk, good_raws)
    _check(dec, raws, good_at, [rows[o] for o in order])


@FUZZ
@given(st.data(), st.lists(st.binary(max_size=40), max_size=8),
       st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=4),
       st.sampled_from(["float64", "float32"]))
def test_raw_decoder_fuzz(data, junk, rows, dtype):
    dec = RawArrayDecoder(3, dtype=dtype)
    with np.errstate(over="ignore"):
        arr = np.array(rows, dtype=np.float64).astype(dtype)
    arr = arr[np.isfinite(arr).all(axis=1)]  # large float64 may overflow float32
    good_raws = [r.astype("<" + np.dtype(dtype).str[1:]).tobytes() for r in arr]
    raws, good_at, order = _mix(data, junk, good_raws)
    _check(dec, raws, good_at, [arr[o].astype(np.float64) for o in order])


@FUZZ
@given(st.lists(st.binary(max_size=30), max_size=10))
def test_json_decoder_never_passes_non_finite(raws):
    X, good, rejects = JSONDecoder(["a"]).decode_many(raws)
    assert all(math.isfinite(v) for v in X.ravel())
