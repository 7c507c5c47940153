"""What scikit-learn's users expect of ``OnlineGaussianMixture`` (issue 15): a model from small streams,
float32 kept, progress lines and messages like scikit-learn's."""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from online_gmm import OnlineGaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]


def _one_pass(model, X, batch, ask=None):
    for a in range(0, len(X), batch):
        model.partial_fit(X[a:a + batch])
        if ask is not None:
            ask(model)
    return model


# ----------------------------------------------------------------------------- small streams
@pytest.mark.parametrize("split", range(5))
def test_one_pass_over_iris_in_batches_of_10_scores_like_sklearns_batch_fit(split):
    X = load_iris().data
    X_train, X_test = train_test_split(X, test_size=0.3, random_state=split)
    reference = GaussianMixture(3, random_state=0).fit(X_train).score(X_test)
    model = _one_pass(OnlineGaussianMixture(3, random_state=0), X_train, 10)
    assert model._online.warm_up > len(X_train)           # the warm-up never ended
    assert model.score(X_test) >= reference - 0.1


def test_iris_asked_after_every_batch_has_a_model_from_the_first_batch_on():
    X = load_iris().data
    gaps = []
    for split in range(6):
        X_train, X_test = train_test_split(X, test_size=0.3, random_state=split)
        reference = GaussianMixture(3, random_state=0).fit(X_train).score(X_test)
        scores = []

        def ask(model, scores=scores, X_test=X_test):
            scores.append(model.score(X_test))

        _one_pass(OnlineGaussianMixture(3, random_state=0), X_train, 10, ask=ask)
        assert len(scores) == -(-len(X_train) // 10) and np.isfinite(scores).all()
        gaps.append(scores[-1] - reference)
    # the provisional fit is refined from the last fresh fit between fits (one per 25% of growth):
    # a local optimum of EM, like scikit-learn's own single start
    assert np.median(gaps) >= -0.05
    assert min(gaps) >= -0.2


def test_a_model_exists_as_soon_as_n_components_rows_were_seen():
    X = np.random.RandomState(0).normal(size=(10, 2))
    model = OnlineGaussianMixture(3, random_state=0).partial_fit(X[:2])
    with pytest.raises(NotFittedError, match="has seen 2 rows: a provisional model needs at least "
                                             "n_components=3"):
        model.predict(X)
    assert not hasattr(model, "means_")
    model.partial_fit(X[2:3])
    assert model.predict(X).shape == (10,)
    assert model.means_.shape == (3, 2)
    assert np.isfinite(model.score_samples(X)).all()


def test_the_provisional_parameters_follow_the_stream():
    rng = np.random.RandomState(1)
    model = OnlineGaussianMixture(1, random_state=0).partial_fit(rng.normal(0, 1, (50, 2)))
    first = model.means_.copy()
    model.partial_fit(rng.normal(10, 1, (50, 2)))
    assert model.means_[0, 0] > first[0, 0] + 4             # the mean of both batches, about 5
    assert model.stats_.total_weight == pytest.approx(100)


def test_wide_stream_shorter_than_its_warm_up_has_a_model_after_one_pass():
    X, _ = make_blobs(2500, n_features=18, centers=7, random_state=0)
    X_train, X_test = X[:2000], X[2000:]
    model = _one_pass(OnlineGaussianMixture(7, random_state=0), X_train, 100)
    assert model._online.warm_up == 5040 and not model._online.initialised
    reference = GaussianMixture(7, random_state=0).fit(X_train).score(X_test)
    assert model.score(X_test) >= reference - 0.1


@pytest.mark.parametrize("ctype", TYPES)
def test_asking_during_the_warm_up_does_not_change_how_it_ends(ctype):
    X, _ = make_blobs(900, n_features=3, centers=3, random_state=2)
    kw = dict(covariance_type=ctype, warm_up=600, random_state=0)
    asked = _one_pass(OnlineGaussianMixture(3, **kw), X, 50, ask=lambda m: m.predict(X[:5]))
    quiet = _one_pass(OnlineGaussianMixture(3, **kw), X, 50)
    assert asked._online.initialised
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(asked, name), getattr(quiet, name))


def test_a_model_pickled_while_warming_up_keeps_its_buffer_not_its_provisional_fit():
    X = np.random.RandomState(3).normal(size=(60, 2))
    model = OnlineGaussianMixture(2, random_state=0).partial_fit(X[:30])
    before = model.score_samples(X)
    clone = pickle.loads(pickle.dumps(model))
    assert "_provisional" not in clone._online.__dict__ or clone._online._provisional is None
    np.testing.assert_allclose(clone.score_samples(X), before, rtol=1e-12)


# ----------------------------------------------------------------------------- verbose, messages
def test_verbose_lines_are_sklearns(capsys):
    X, _ = make_blobs(300, centers=2, random_state=0)
    OnlineGaussianMixture(2, verbose=1, verbose_interval=2, tol=1e-6, random_state=0).fit(X)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Initialization 0"
    assert lines[-1] == "Initialization converged."
    assert lines[1:-1] and all(re.fullmatch(r"  Iteration \d*[02468]", line) for line in lines[1:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        OnlineGaussianMixture(2, verbose=2, verbose_interval=1, max_iter=3, tol=0, n_init=2,
                              random_state=0).fit(X)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("Initialization ")][::2] == [
        "Initialization 0", "Initialization 1"]
    assert sum(bool(re.fullmatch(r"  Iteration [123]\t time lapse \d+\.\d{5}s\t ll change (-?\d+\.\d{5}|inf)",
                                 line)) for line in lines) == 6
    assert sum(bool(re.fullmatch(r"Initialization did not converge\. time lapse \d+\.\d{5}s\t lower "
                                 r"bound -?\d+\.\d{5}\.", line)) for line in lines) == 2


def test_weights_init_messages_print_plain_numbers():
    X = np.random.RandomState(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match=re.escape("got min -0.2, max 1.2")) as err:
        OnlineGaussianMixture(2, weights_init=np.array([1.2, -0.2])).fit(X)
    assert "np.float64" not in str(err.value)
    with pytest.raises(ValueError, match=r"must sum to 1, got 0\.5$"):
        OnlineGaussianMixture(2, weights_init=np.array([0.25, 0.25])).fit(X)


# ----------------------------------------------------------------------------- float32
def _offset_blobs(offset=1e4, n=3000, seed=0):
    X, _ = make_blobs(n, n_features=3, centers=3, cluster_std=0.5, random_state=seed)
    return (X + offset).astype(np.float32)


@pytest.mark.parametrize("ctype", TYPES)
def test_float32_input_gives_float32_attributes_and_outputs(ctype):
    X = _offset_blobs(offset=0.0, n=600)
    for model in (OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X),
                  _one_pass(OnlineGaussianMixture(3, covariance_type=ctype, warm_up=300,
                                                  random_state=0), X, 100)):
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            assert getattr(model, name).dtype == np.float32, name
        assert model.score_samples(X).dtype == np.float32
        assert model.predict_proba(X).dtype == np.float32
        assert isinstance(model.score(X), float)
    model64 = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X.astype(float))
    assert model64.means_.dtype == model64.score_samples(X.astype(float)).dtype == np.float64


@pytest.mark.parametrize("ctype", TYPES)
def test_float32_statistics_are_accumulated_in_float64_at_an_offset_of_1e4(ctype):
    # The same values given as float32 and as float64: the fits agree to float32's last digit
    # because every sum is formed in float64 (float32 sums over 3000 rows about 1e4 would leave the
    # within-component variances, 0.25, with two or three correct digits).
    X32 = _offset_blobs()
    X64 = X32.astype(np.float64)
    kw = dict(covariance_type=ctype, init_params="random_from_data", tol=0, max_iter=20,
              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = OnlineGaussianMixture(3, **kw).fit(X32)
        b = OnlineGaussianMixture(3, **kw).fit(X64)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-7)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-6)
    np.testing.assert_allclose(a.score_samples(X32), b.score_samples(X64), rtol=1e-6)
    # the stepwise statistics too (warm-up, then updates)
    s32 = _one_pass(OnlineGaussianMixture(3, covariance_type=ctype, warm_up=1000, random_state=0),
                    X32, 250).stats_
    s64 = _one_pass(OnlineGaussianMixture(3, covariance_type=ctype, warm_up=1000, random_state=0),
                    X64, 250).stats_
    assert s32.scatter.dtype == np.float64
    np.testing.assert_allclose(s32.scatter, s64.scatter, rtol=1e-12)
    np.testing.assert_allclose(s32.means, s64.means, rtol=1e-15)


# ----------------------------------------------------------------------------- array API
def _namespace(xp_name: str, device: str | None):
    """(xp, device) for a test, or skip saying why."""
    if xp_name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict", reason="array-api-strict (the test extra) is "
                                                            "not installed")
        return xp, xp.Device("CPU_DEVICE")
    try:
        import torch
    except ImportError:
        pytest.skip("PyTorch is not installed: its array API tests do not run (pip install torch)")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    return torch, torch.device(device)


_SPACES = [("array_api_strict", None), ("torch", "cpu"), ("torch", "cuda")]


@pytest.fixture
def dispatch_env(monkeypatch):
    # scikit-learn turns array API dispatch on only with it set (the estimator gives scipy NumPy
    # arrays only, so scipy's own mode, read at its import, is not needed)
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


@pytest.mark.parametrize("xp_name, device", _SPACES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_array_api_fit_and_stream_return_the_inputs_namespace_and_device(xp_name, device, dtype,
                                                                         dispatch_env):
    import sklearn
    from sklearn.utils._array_api import device as device_of
    from sklearn.utils._array_api import get_namespace, move_to

    xp, dev = _namespace(xp_name, device)
    X = make_blobs(400, n_features=3, centers=3, random_state=0)[0].astype(dtype)
    X_xp = xp.asarray(X, device=dev)
    kw = dict(init_params="random_from_data", random_state=0, warm_up=200)
    reference = OnlineGaussianMixture(3, **kw).fit(X)
    streamed_ref = _one_pass(OnlineGaussianMixture(3, **kw), X, 100)
    # float64 agrees to rounding; float32 is computed in float32 on the device (the NumPy kernels
    # compute in float64), with the statistics accumulated in float64
    rtol, atol = (1e-12, 0.0) if dtype == "float64" else (1e-4, 1e-6)
    with sklearn.config_context(array_api_dispatch=True):
        model = OnlineGaussianMixture(3, **kw).fit(X_xp)
        streamed = OnlineGaussianMixture(3, **kw)
        for a in range(0, 400, 100):
            streamed.partial_fit(X_xp[a:a + 100, ...])
        for fitted, ref in ((model, reference), (streamed, streamed_ref)):
            outputs = {"means_": fitted.means_, "covariances_": fitted.covariances_,
                       "precisions_": fitted.precisions_, "weights_": fitted.weights_,
                       "predict_proba": fitted.predict_proba(X_xp),
                       "score_samples": fitted.score_samples(X_xp), "predict": fitted.predict(X_xp)}
            for name, value in outputs.items():
                assert get_namespace(value)[0] is get_namespace(X_xp)[0], name
                assert device_of(value) == device_of(X_xp), name
                expected = getattr(ref, name) if name.endswith("_") else getattr(ref, name)(X)
                np.testing.assert_allclose(move_to(value, xp=np, device="cpu"), expected,
                                           rtol=rtol, atol=atol, err_msg=name)
            assert fitted.means_.dtype == getattr(xp, dtype)
            assert isinstance(fitted.score(X_xp), float)
            assert fitted.score(X_xp) == pytest.approx(ref.score(X), rel=rtol)
        sample, labels = model.sample(5)
        assert get_namespace(sample)[0] is get_namespace(X_xp)[0]
        assert get_namespace(labels)[0] is get_namespace(X_xp)[0]
        with pytest.raises(ValueError, match="must use the same namespace"):
            model.predict(X)
        # the namespace (a module) is not pickled, and is found again on load
        loaded = pickle.loads(pickle.dumps(model))
        assert get_namespace(loaded.predict(X_xp))[0] is get_namespace(X_xp)[0]
        np.testing.assert_array_equal(move_to(loaded.predict_proba(X_xp), xp=np, device="cpu"),
                                      move_to(model.predict_proba(X_xp), xp=np, device="cpu"))


def test_array_api_dispatch_refuses_the_k_means_starts(dispatch_env):
    import sklearn

    X = make_blobs(100, n_features=2, centers=3, random_state=0)[0]
    with sklearn.config_context(array_api_dispatch=True):
        for init in ("kmeans", "k-means++"):
            with pytest.raises(NotImplementedError, match="Allowed `init_params`.+if "
                                                          "'array_api_dispatch' is enabled"):
                OnlineGaussianMixture(3, init_params=init).fit(X)
            with pytest.raises(NotImplementedError, match="Allowed `init_params`"):
                OnlineGaussianMixture(3, init_params=init).partial_fit(X)
    assert OnlineGaussianMixture().__sklearn_tags__().array_api_support
