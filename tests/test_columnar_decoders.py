"""The columnar JSON path (msgspec over a joined block) against the per-record reference decoder.

The reference is :meth:`JSONDecoder._careful` applied to one line at a time (the standard library's
``json`` plus explicit checks): the block path must give the same good rows with the same values, the
same rejects with the same reasons at the same indices, and the same carried values, whatever the
input and however it is batched.  The inputs mix good records with every kind of bad and adversarial
line, including lines built to make a joined block mis-align (a value spanning two lines, two values on
one line).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.decoders import JSONDecoder

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(dec: JSONDecoder, raws):
    """Per-record decoding: the previous decoder's behaviour, one line at a time."""
    rows, good, rejects, carried = [], [], [], {n: [] for n in dec.carry_names}
    for i, raw in enumerate(raws):
        res, obj = dec._careful(raw)
        if isinstance(res, str):
            rejects.append((i, res))
            continue
        rows.append(res)
        good.append(i)
        for name, path in zip(dec.carry_names, dec._carry_paths):
            node = obj
            for k in path:
                node = node.get(k) if isinstance(node, dict) else None
            if path in dec._paths and node is not None:  # a carried feature: its value, a float
                node = res[dec._paths.index(path)]
            carried[name].append(node)
    return np.asarray(rows, dtype=float).reshape(len(good), len(dec._paths)), good, rejects, carried


def assert_same(dec, raws):
    X, good, rejects, carried = dec.decode_columns(raws)
    rX, rgood, rrejects, rcarried = reference(dec, raws)
    assert good == rgood
    assert rejects == rrejects
    np.testing.assert_array_equal(X, rX)   # NaN == NaN here: same missing values
    assert X.dtype == np.float64 and X.shape == (len(good), len(dec._paths))
    for name in dec.carry_names:
        assert carried[name].tolist() == rcarried[name]


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-10**20, max_value=10**20),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 1e-320, 2**53 + 1, 10**308, 10**309]),
)


def _num_text(v) -> str:
    return json.dumps(v)


@st.composite
def good_line(draw):
    a, b = draw(numbers), draw(numbers)
    obj = {"id": draw(st.one_of(st.integers(), st.text(max_size=5))), "m": {"a": a, "b": b}}
    if draw(st.booleans()):
        obj["extra"] = draw(st.lists(st.integers(), max_size=3))
    text = json.dumps(obj, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    if draw(st.integers(0, 9)) == 0:
        text += "\r"
    return text.encode()


BAD_LINES = [
    b'{"id": 1, "m": {"a": NaN, "b": 1}}',
    b'{"id": 1, "m": {"a": Infinity, "b": 1}}',
    b'{"id": 1, "m": {"a": 1e999, "b": 1}}',
    b'{"id": 1, "m": {"a": true, "b": 1}}',
    b'{"id": 1, "m": {"a": "1.5", "b": 1}}',
    b'{"id": 1, "m": {"a": null, "b": 1}}',
    b'{"id": 1, "m": {"b": 1}}',
    b'{"id": 1}',
    b'{"id": 1, "m": [1, 2]}',
    b'{"id": 1, "m": {"a": 1, "b": 2}',                 # unclosed, ends with }
    b'{"id": 1, "m": {"a": 1, "b": 2}, "z": [',         # opens a value the next line could close
    b'1]}',
    b'{"id": 1, "m": {"a": 1, "b": 2}} {"id": 2, "m": {"a": 1, "b": 2}}',   # two values on a line
    b'{"id": 1, "m": {"a": 1, "b": 2}},{"id": 2, "m": {"a": 1, "b": 2}}',
    b'{"id": "\xff", "m": {"a": 1, "b": 2}}',            # invalid UTF-8 in a field not read
    b'{"id": "\xed\xa0\x80", "m": {"a": 1, "b": 2}}',    # an encoded surrogate
    b'{"id": "\\ud800", "m": {"a": 1, "b": 2}}',         # an escaped lone surrogate (valid json)
    b'{"id": 1, "m": {"a": 1, "a": true, "b": 2}}',      # duplicate keys
    b'{"id": 1, "m": {"a": true, "a": 1, "b": 2}}',
    b' {"id": 1, "m": {"a": 1, "b": 2}}',                # leading space
    b'\xef\xbb\xbf{"id": 1, "m": {"a": 1, "b": 2}}',     # BOM
    b'[1, 2]',
    b'"text"',
    b'{"id": 1, "m": {"a": 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000, "b": 1}}',
    b'{"id": 1, "m": {"a": 01, "b": 2}}',
    b'{"id": 1, "m": {"a": 1., "b": 2}}',
    b'{"id": 1, "m": {"a": .5, "b": 2}}',
    b'{"id": "a\tb", "m": {"a": 1, "b": 2}}',           # raw control character in a string
    b'{}',
    b'{"id":1,"m":{"a":1,"b":2}}}',
    b'garbage',
    b'',
    b'   ',
]


@FUZZ
@given(
    lines=st.lists(st.one_of(good_line(), st.sampled_from(BAD_LINES), st.binary(max_size=30)),
                   max_size=40),
    missing=st.sampled_from(["reject", "nan"]),
)
def test_block_path_equals_per_record_reference(lines, missing):
    dec = JSONDecoder(["m.a", "m.b"], missing=missing, carry=["id"])
    assert_same(dec, lines)


#: Layouts the block path reads by msgspec's astuple of the features' object, cut to the features
#: when the object holds more (carried fields of the same object, a feature carried too, one feature).
LAYOUTS = [
    (["m.b", "m.a"], ["m.a", "extra"]),
    (["m.a"], ["id", "m.b"]),
    (["m.a", "m.b"], ["m.zz", "id"]),
]


@FUZZ
@given(
    lines=st.lists(st.one_of(good_line(), st.sampled_from(BAD_LINES), st.binary(max_size=30)),
                   max_size=40),
    layout=st.sampled_from(LAYOUTS),
    missing=st.sampled_from(["reject", "nan"]),
)
def test_block_path_equals_reference_when_carried_fields_share_the_features_object(lines, layout, missing):
    fields, carry = layout
    assert_same(JSONDecoder(fields, missing=missing, carry=carry), lines)


@st.composite
def flat_line(draw):
    """A flat event (features beside the carried id and timestamp), as Kafka messages often are."""
    obj = {"id": draw(st.one_of(st.integers(), st.text(max_size=5))), "a": draw(numbers),
           "ts": draw(st.text(max_size=8)), "b": draw(numbers)}
    if draw(st.booleans()):
        obj = dict(reversed(list(obj.items())))
    return json.dumps(obj).encode()


FLAT_BAD = [b'{"id": 1, "a": NaN, "b": 1}', b'{"id": 1, "a": "1", "b": 1}', b'{"id": 1, "b": 1}',
            b'{"id": 1, "a": 1, "b": 2} {"id": 2, "a": 1, "b": 2}', b'{"id": 1, "a": 1, "b": 2, "z": [', b"1]}"]


@FUZZ
@given(lines=st.lists(st.one_of(flat_line(), st.sampled_from(FLAT_BAD)), max_size=40),
       missing=st.sampled_from(["reject", "nan"]))
def test_block_path_equals_reference_on_flat_records(lines, missing):
    assert_same(JSONDecoder(["a", "b"], missing=missing, carry=["id", "ts"]), lines)
    assert_same(JSONDecoder(["b", "a"], missing=missing, carry=["ts"]), lines)


@FUZZ
@given(lines=st.lists(st.one_of(good_line(), st.sampled_from(BAD_LINES)), min_size=1, max_size=30),
       cut=st.integers(0, 30))
def test_results_do_not_depend_on_batching(lines, cut):
    dec = JSONDecoder(["m.a", "m.b"], carry=["id", "m.a"])
    X, good, rejects, carried = dec.decode_columns(lines)
    X1, g1, r1, c1 = dec.decode_columns(lines[:cut])
    X2, g2, r2, c2 = dec.decode_columns(lines[cut:])
    k = len(lines[:cut])
    np.testing.assert_array_equal(X, np.concatenate([X1, X2]))
    assert good == g1 + [g + k for g in g2]
    assert rejects == r1 + [(i + k, why) for i, why in r2]
    assert carried["id"].tolist() == c1["id"].tolist() + c2["id"].tolist()


def test_misaligning_lines_never_merge():
    """A value opened on one line and closed on the next, next to a line with two values: the joined
    block decodes to as many values as lines, but the lines must still be judged one by one."""
    dec = JSONDecoder(["m.a", "m.b"])
    raws = [
        b'{"m": {"a": 1, "b": 2}, "z": [',
        b'1]}',
        b'{"m": {"a": 3, "b": 4}} {"m": {"a": 5, "b": 6}}',
        b'{"m": {"a": 7, "b": 8}}',
    ]
    X, good, rejects, _ = dec.decode_columns(raws)
    assert good == [3] and X.tolist() == [[7.0, 8.0]]
    assert [i for i, _ in rejects] == [0, 1, 2]
    assert_same(dec, raws)


def test_clean_block_is_decoded_without_the_per_record_path(monkeypatch):
    """On a clean batch the per-record reference is never called."""
    dec = JSONDecoder(["m.a", "m.b"], carry=["id"])
    raws = [json.dumps({"id": i, "m": {"a": i * 0.5, "b": -i}}).encode() for i in range(2000)]

    def boom(raw):
        raise AssertionError(f"per-record path used for {raw!r}")

    monkeypatch.setattr(dec, "_careful", boom)
    X, good, rejects, carried = dec.decode_columns(raws)
    assert X.shape == (2000, 2) and good == list(range(2000)) and rejects == []
    assert X[10].tolist() == [5.0, -10.0] and carried["id"][1999] == 1999


def test_dirty_block_decodes_only_bad_lines_one_by_one(monkeypatch):
    dec = JSONDecoder(["m.a", "m.b"])
    raws = [json.dumps({"m": {"a": i, "b": i}}).encode() for i in range(1000)]
    for i in (5, 500, 999):
        raws[i] = b'{"m": {"a": NaN, "b": 1}}'
    seen = []
    original = dec._careful
    monkeypatch.setattr(dec, "_careful", lambda raw: (seen.append(raw), original(raw))[1])
    X, good, rejects, _ = dec.decode_columns(raws)
    assert [i for i, _ in rejects] == [5, 500, 999] and X.shape == (997, 2)
    assert len(seen) == 3
    assert all(reason == "field 'm.a' is not finite: NaN" for _, reason in rejects)


@pytest.mark.parametrize("missing", ["reject", "nan"])
def test_single_feature_and_top_level_fields(missing):
    dec = JSONDecoder(["x"], missing=missing)
    raws = [b'{"x": 1}', b'{"x": 2.5, "y": 1}', b'{"y": 1}', b'{"x": null}']
    X, good, rejects, _ = dec.decode_columns(raws)
    if missing == "nan":
        assert good == [0, 1, 2, 3] and X[:2, 0].tolist() == [1.0, 2.5] and all(map(math.isnan, X[2:, 0]))
    else:
        assert good == [0, 1] and [r for r, _ in rejects] == [2, 3]
    assert_same(dec, raws)


def test_a_carried_feature_is_carried_as_its_float_on_both_paths():
    dec = JSONDecoder(["m.a", "m.b"], carry=["m.a", "id"])
    good = b'{"id": 7, "m": {"a": 9007199254740993, "b": 1}}'
    unusual = b' {"id": 8, "m": {"a": 9007199254740993, "b": 2}}'   # leading space: the careful path
    X, rows, rejects, carried = dec.decode_columns([good, unusual])
    assert rows == [0, 1] and rejects == []
    assert carried["m.a"].tolist() == [9007199254740992.0, 9007199254740992.0] == X[:, 0].tolist()
    assert [type(v) for v in carried["m.a"]] == [float, float]
    assert carried["id"].tolist() == [7, 8]
