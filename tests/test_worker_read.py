"""A scale-out worker's reads: a round reads the same records however the read is cut or started.

The round's records must not depend on how the worker read them (in one go, in chunks, or ahead of
the task on a thread): the bit-for-bit resume of the scale-out tests rests on it.  These tests run
the worker's read functions on a real JSON-lines file with bad lines mixed in, without Dask.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from connectors.lines import JSONLinesSource
from online_gmm._worker import _read, _ReadAhead

QUOTA = 37


@pytest.fixture
def events(tmp_path):
    rng = np.random.default_rng(3)
    lines = []
    for i in range(400):
        if i % 23 == 5:
            lines.append('{"x": "text", "y": 1.0}')        # text where a number belongs
        elif i % 31 == 7:
            lines.append('{"x": 1.0, "y": ')                # malformed JSON
        else:
            x, y = rng.normal(size=2)
            lines.append(json.dumps({"x": x, "y": y, "id": i}))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _source(path):
    return JSONLinesSource(str(path), fields=["x", "y"], carry=["id"])


def _rounds(path, chunk, n_rounds=6):
    src = _source(path)
    out = []
    try:
        for _ in range(n_rounds):
            (X, columns, rejects, position, consumed), status = _read(src, QUOTA, 1.0, None, None,
                                                                       chunk=chunk)
            out.append((X, columns, [(r.reason, r.meta.get("line")) for r in rejects], position,
                        consumed, status))
    finally:
        src.close()
    return out


def _same(a, b):
    assert len(a) == len(b)
    for (Xa, ca, ra, pa, na, sa), (Xb, cb, rb, pb, nb, sb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(Xa, Xb)
        assert ca.keys() == cb.keys()
        for k in ca:
            np.testing.assert_array_equal(ca[k], cb[k])
        assert (ra, pa, na, sa) == (rb, pb, nb, sb)


@pytest.mark.parametrize("chunk", [1, 5, 36, 4096])
def test_a_chunked_read_reads_the_same_records_as_one_read(events, chunk):
    whole = _rounds(events, None)
    assert sum(len(r[2]) for r in whole) > 0, "the rounds must hold bad lines"
    assert [r[0].shape[0] for r in whole] == [QUOTA] * len(whole)
    _same(_rounds(events, chunk), whole)


def test_a_read_ahead_hands_over_the_records_a_direct_read_gives(events):
    direct = _rounds(events, None, n_rounds=2)
    src = _source(events)
    try:
        _read(src, QUOTA, 1.0, None, None)                  # the first round, read by the task
        ahead = _ReadAhead(src, QUOTA, 1.0, None, None)     # the second, read meanwhile
        taken = ahead.take(direct[0][3], QUOTA, None)
        assert taken is not None
        (X, columns, rejects, position, consumed), status = taken
        _same([(X, columns, [(r.reason, r.meta.get("line")) for r in rejects], position, consumed,
                status)], direct[1:])
        # a task that starts elsewhere (a redo) discards the read: the caller seeks and reads again
        again = _ReadAhead(src, QUOTA, 1.0, None, None)
        assert again.take(direct[1][3], QUOTA + 1, None) is None
    finally:
        src.close()
