"""Tests of online_gmm._sketch.QuantileSketch: the stated rank-error bound against numpy's exact
quantiles, merge, state round trip, determinism across processes, and values that are not finite."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from online_gmm import _sketch
from online_gmm._sketch import QuantileSketch, rank_error_bound

QS = (0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999)


@functools.lru_cache(maxsize=2)
def _streams(n=100_000, seed=0):
    rng = np.random.RandomState(seed)
    return {
        "normal": rng.standard_normal(n),
        "student_t2": rng.standard_t(2, n),                          # heavy tails
        "cauchy": rng.standard_cauchy(n),
        "negative_lognormal": -50.0 + np.exp(2.0 * rng.standard_normal(n)),
        "offset_chi2_64": -1000.0 + 0.5 * rng.chisquare(64, n),       # -log p with a large offset
        "bimodal": np.where(rng.rand(n) < 0.97, rng.standard_normal(n), 30.0 + rng.standard_normal(n)),
        "ascending": np.sort(rng.standard_normal(n)),
        "drifting": rng.standard_normal(n) + np.linspace(0.0, 20.0, n),
        "poisson_ties": rng.poisson(3.0, n).astype(np.float64),
    }


def _rank_miss(sorted_x: np.ndarray, estimate: float, q: float) -> float:
    """Distance from q to the exact rank interval of ``estimate`` in the data (0 inside it)."""
    n = sorted_x.shape[0]
    lo = np.searchsorted(sorted_x, estimate, side="left") / n
    hi = np.searchsorted(sorted_x, estimate, side="right") / n
    return 0.0 if lo <= q <= hi else min(abs(lo - q), abs(hi - q))


def _sketch_of(batches, k=200) -> QuantileSketch:
    s = QuantileSketch(k=k)
    for b in batches:
        s.update(b)
    return s


def _assert_within_bound(sketch, x, name):
    xs = np.sort(x[np.isfinite(x)])
    for q in QS:
        miss = _rank_miss(xs, sketch.quantile(q), q)
        assert miss <= rank_error_bound(q), (name, q, miss, rank_error_bound(q))


def test_rank_error_bound_is_stated():
    assert rank_error_bound(0.99) == pytest.approx(0.0025)
    assert rank_error_bound(0.001) == pytest.approx(0.00025)
    assert rank_error_bound(0.5) == pytest.approx(0.125)


@pytest.mark.parametrize("name", sorted(_streams(10)))
def test_quantiles_of_a_1e5_stream_in_batches_of_1000_are_within_the_bound(name):
    x = _streams()[name]
    s = _sketch_of(np.split(x, 100))
    assert s.n == x.shape[0]
    _assert_within_bound(s, x, name)


def test_a_wrong_estimate_misses_the_bound():
    """The check itself has teeth: the 0.98-quantile given for the 0.99-quantile fails it."""
    x = _streams()["normal"]
    xs = np.sort(x)
    assert _rank_miss(xs, np.quantile(x, 0.98), 0.99) > rank_error_bound(0.99)
    assert _rank_miss(xs, np.quantile(x, 0.99), 0.99) <= 1e-5


@pytest.mark.parametrize("name", ["student_t2", "negative_lognormal", "ascending", "poisson_ties"])
def test_merge_of_workers_matches_the_concatenated_stream_within_the_bound(name):
    x = _streams()[name]
    batches = np.split(x, 100)
    workers = [_sketch_of(batches[i::4]) for i in range(4)]     # 4 workers, interleaved batches
    before = workers[1].to_state()
    merged = workers[0].merge(workers[1]).merge(workers[2]).merge(workers[3])
    assert workers[1].to_state() == before                      # the other side is left unchanged
    assert merged.n == x.shape[0]
    whole = _sketch_of(batches)
    _assert_within_bound(merged, x, name)
    _assert_within_bound(whole, x, name)
    xs = np.sort(x)
    for q in QS:        # merged and single-stream estimates sit in the same band around q
        assert abs(_rank_miss(xs, merged.quantile(q), q) - _rank_miss(xs, whole.quantile(q), q)) \
            <= rank_error_bound(q)


def test_merge_with_empty_and_mismatched_sketches():
    s = _sketch_of([np.arange(10.0)])
    state = s.to_state()
    s.merge(QuantileSketch())
    assert s.to_state() == state
    empty = QuantileSketch().merge(s)
    assert empty.n == 10 and empty.quantile(0.5) == s.quantile(0.5)
    with pytest.raises(ValueError, match="different k: 200 and 100"):
        s.merge(QuantileSketch(k=100))
    with pytest.raises(TypeError, match="can only merge a QuantileSketch, got list"):
        s.merge([1.0])


def test_state_round_trip_continues_identically():
    """A sketch restored (through JSON) after every batch ends bit-identical to the original."""
    rng = np.random.RandomState(1)
    batches = [rng.standard_t(3, size=int(m)) for m in rng.randint(1, 2000, size=60)]
    original, restored = QuantileSketch(), QuantileSketch()
    for b in batches:
        original.update(b)
        restored.update(b)
        restored = QuantileSketch.from_state(json.loads(json.dumps(restored.to_state())))
        assert restored.quantile(0.99) == original.quantile(0.99)
    assert restored.to_state() == original.to_state()
    # serialising has no side effect on the sketch: a run that checkpoints equals one that does not
    plain = _sketch_of(batches)
    assert plain.to_state() == original.to_state()


_DETERMINISM_SCRIPT = """
import hashlib, importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("_sketch", sys.argv[1])   # without the package's imports
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
rng = np.random.RandomState(7)
s, flags = mod.QuantileSketch(), []
for _ in range(100):                  # NLLThreshold.flag_many's rule: the threshold before the batch
    batch = rng.standard_t(3, size=1000)
    flags.append(batch > (s.quantile(0.99) if s.n else np.inf))
    s.update(batch)
flags = np.concatenate(flags)
print(hashlib.sha256(flags.tobytes()).hexdigest(), int(flags.sum()))
print(hashlib.sha256(json.dumps(s.to_state(), sort_keys=True).encode()).hexdigest())
"""


def test_same_batches_give_identical_state_and_flags_in_separate_processes():
    """Unseeded randomness (e.g. KLL's compactions, seeded from the clock per process) would make
    two processes differ; the t-digest must not."""
    path = _sketch.__file__
    runs = [subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, path], capture_output=True,
                           text=True, check=True, timeout=120).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    n_flagged = int(runs[0].split()[1])
    assert 700 <= n_flagged <= 1300                              # about 1% of 1e5


def test_infinite_and_nan_values_do_not_enter_the_sketch():
    rng = np.random.RandomState(2)
    x = rng.standard_normal(5000)
    dirty = x.copy()
    dirty[::50] = np.inf
    dirty[1::50] = np.nan
    dirty[2::50] = -np.inf
    s, clean = QuantileSketch(), QuantileSketch()
    s.update(dirty)
    clean.update(dirty[np.isfinite(dirty)])
    assert s.to_state()["tdigest"] == clean.to_state()["tdigest"]
    assert (s.n, s.n_pos_inf_, s.n_ignored_) == (4700, 100, 200)
    s.update(np.array([np.inf, np.nan]))
    s.update_one(math.inf)
    s.update_one(-math.inf)
    assert (s.n, s.n_pos_inf_, s.n_ignored_) == (4700, 102, 202)
    assert math.isfinite(s.quantile(1.0))
    all_inf = QuantileSketch()
    all_inf.update(np.full(10, np.inf))
    assert all_inf.n == 0 and math.isnan(all_inf.quantile(0.5))


def test_huge_and_negative_values_are_ordinary():
    rng = np.random.RandomState(3)
    x = np.concatenate([rng.standard_normal(20_000) - 1e3, [1e300, 1e300, -1e300]])
    s = _sketch_of(np.array_split(x, 21))
    assert s.quantile(1.0) == 1e300 and s.quantile(0.0) == -1e300
    _assert_within_bound(s, x, "huge")


def test_empty_inputs_and_validation():
    s = QuantileSketch()
    assert math.isnan(s.quantile(0.5)) and math.isnan(s.rank(0.0)) and s.n == 0
    s.update(np.array([]))
    assert s.n == 0
    with pytest.raises(ValueError, match=r"values must be a 1-d array, got shape \(2, 3\)"):
        s.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\], got 1.5"):
        s.quantile(1.5)
    with pytest.raises(ValueError, match=r"k must be an int in \[10, 65535\], got 5"):
        QuantileSketch(k=5)
    with pytest.raises(ValueError, match="expected format 1, got 7"):
        QuantileSketch.from_state({"format": 7})
