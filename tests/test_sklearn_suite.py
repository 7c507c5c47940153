"""scikit-learn's own ``GaussianMixture`` test file, run against ``OnlineGaussianMixture``.

``sklearn/mixture/tests/test_gaussian_mixture.py`` ships in scikit-learn's wheel. It is loaded here as
a fresh module (scikit-learn's copy is left alone) whose ``GaussianMixture`` is replaced by a subclass
of :class:`~online_gmm.OnlineGaussianMixture` that only borrows the name: its tests then fit, predict,
score and sample our estimator, and the messages they match ("This GaussianMixture instance is not
fitted yet") name the class they expect. Its test functions are collected from this module with
the fixtures its conftest would give them: ``global_dtype`` always runs float32 as well as float64
(what ``SKLEARN_RUN_FLOAT32_TESTS=1`` does there) and ``global_random_seed`` is scikit-learn's default
(``SKLEARN_TESTS_GLOBAL_RANDOM_SEED`` overrides it, as there). The array API tests run on
``array_api_strict`` (the test extra) and on PyTorch, CPU and CUDA, where PyTorch is installed
(scikit-learn's own skip says so where it is not). scikit-learn refuses to turn its array API
dispatch on unless ``SCIPY_ARRAY_API=1``; :func:`scipy_array_api` sets it for these tests only
(scipy's own array API mode, read when scipy is first imported, is not needed: the estimator hands
scipy NumPy arrays only).

Every test of that file runs but those in :data:`EXCLUDED`, each with its reason: tests of
scikit-learn's private helpers, which never touch the estimator, and tests of the exact wording of
scikit-learn's messages about ``weights_init``, ``means_init`` and ``precisions_init``
(``test_estimator.py`` and ``test_sklearn_users.py`` test ours).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from online_gmm import OnlineGaussianMixture

_PRIVATE = "calls scikit-learn's private helpers only ({}): nothing of OnlineGaussianMixture runs"

#: scikit-learn tests not run here, and why
EXCLUDED = {
    "test_suffstat_sk_full": _PRIVATE.format("_estimate_gaussian_covariances_full/_tied, "
                                             "_compute_precision_cholesky"),
    "test_suffstat_sk_tied": _PRIVATE.format("_estimate_gaussian_covariances_tied/_full, "
                                             "_compute_precision_cholesky"),
    "test_suffstat_sk_diag": _PRIVATE.format("_estimate_gaussian_covariances_diag/_full, "
                                             "_compute_precision_cholesky"),
    "test_gaussian_suffstat_sk_spherical": _PRIVATE.format(
        "_estimate_gaussian_covariances_spherical, _compute_precision_cholesky"),
    "test_compute_log_det_cholesky": _PRIVATE.format("_compute_log_det_cholesky"),
    "test_gaussian_mixture_log_probabilities": _PRIVATE.format("_estimate_log_gaussian_prob"),
    "test_gaussian_mixture_precisions_init": (
        "calls GaussianMixture's private methods _set_parameters and _initialize(X, resp), which "
        "OnlineGaussianMixture does not have (its starting parameters come from _init.initial_params; "
        "precisions_init is run by test_gaussian_mixture_precisions_init_diag and test_check_precisions "
        "here)"),
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "patches scikit-learn's private _estimate_gaussian_parameters with a Mock and counts its "
        "calls; OnlineGaussianMixture never calls it (its M-step is SufficientStatistics.to_params)"),
    "test_check_weights": (
        "matches scikit-learn's exact wording (\"The parameter 'weights' should be in the range "
        "[0, 1], but got max value <min>, min value <max>\"); ours names the parameter, weights_init, "
        "with plain numbers (test_sklearn_users.py::test_weights_init_messages_print_plain_numbers)"),
    "test_check_means": (
        "matches scikit-learn's exact wording (\"The parameter 'means' should have the shape of\"); "
        "ours: 'means_init must have shape (K, D), got ...' (test_estimator.py)"),
    "test_check_precisions": (
        "matches scikit-learn's exact wording (\"The parameter 'full precision' should have the shape "
        "of\"); ours: 'precisions_init for covariance_type=... must have shape ...'"),
}


def _load_suite():
    found = importlib.util.find_spec("sklearn.mixture.tests.test_gaussian_mixture")
    if found is None or found.origin is None:                          # pragma: no cover
        pytest.skip("scikit-learn's test_gaussian_mixture.py is not installed", allow_module_level=True)
    # a module of its own name, from the same file: scikit-learn's copy is not touched
    spec = importlib.util.spec_from_file_location("_sklearn_test_gaussian_mixture_online",
                                                  found.origin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class GaussianMixture(OnlineGaussianMixture):
        """OnlineGaussianMixture under the name scikit-learn's tests expect in messages."""

    module.GaussianMixture = GaussianMixture
    return module


def _array_api_usable() -> bool:
    """scikit-learn's own test of its array API support, with SCIPY_ARRAY_API=1 (set by
    :func:`scipy_array_api` for these tests): recent enough NumPy and SciPy."""
    from sklearn.utils._array_api import _check_array_api_dispatch

    saved = os.environ.get("SCIPY_ARRAY_API")
    os.environ["SCIPY_ARRAY_API"] = "1"
    try:
        _check_array_api_dispatch(True)
        return True
    except (ImportError, RuntimeError):
        return False
    finally:
        if saved is None:
            del os.environ["SCIPY_ARRAY_API"]
        else:
            os.environ["SCIPY_ARRAY_API"] = saved


#: the reason of scikit-learn's skip_if_array_api_compat_not_configured, evaluated once when
#: sklearn.utils._testing is first imported (by then SCIPY_ARRAY_API may not be set in this process)
_COMPAT_SKIP = "SCIPY_ARRAY_API not set"


def _with_our_array_api_skip(test):
    """``test`` with scikit-learn's import-time array API skip replaced by this module's."""
    marks = list(getattr(test, "pytestmark", []))
    kept = [m for m in marks if not (m.name == "skipif" and _COMPAT_SKIP in m.kwargs.get("reason", ""))]
    if len(kept) != len(marks):
        if not _array_api_usable():
            kept.append(pytest.mark.skip(reason="scikit-learn's array API support is not functional "
                                                "here (it needs SciPy >= 1.14)"))
        test.pytestmark = kept
    return test


_SUITE = _load_suite()
_TESTS = sorted(name for name in vars(_SUITE) if name.startswith("test_"))
for _name in _TESTS:
    if _name not in EXCLUDED:
        globals()[_name] = _with_our_array_api_skip(getattr(_SUITE, _name))


@pytest.fixture(autouse=True)
def scipy_array_api(monkeypatch):
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


@pytest.fixture(params=[np.float32, np.float64])
def global_dtype(request):
    return request.param


@pytest.fixture
def global_random_seed():
    return int(os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42").split("-")[0])


def test_every_exclusion_names_a_test_of_the_suite():
    assert set(EXCLUDED) <= set(_TESTS)
    assert len(_TESTS) - len(EXCLUDED) >= 30
    assert _SUITE.GaussianMixture.__mro__[1] is OnlineGaussianMixture
