"""Configuration: every key's type and range is checked at load, naming the section and key."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from online_gmm.config import SPECS, ConfigError, load_config, parse_config
from online_gmm.model_spec import (DEFAULTS, PARAMETERS, InvalidParameterError, ModelSpec, check_params,
                                   check_random_state)

ROOT = Path(__file__).resolve().parents[1]
BASE = {"source": {"type": "jsonl", "path": "x.jsonl", "fields": ["a", "b"]}}


def _with(section, **keys):
    raw = {k: dict(v) for k, v in BASE.items()}
    raw.setdefault(section, {}).update(keys)
    return raw


@pytest.mark.parametrize("section, key, value, expected", [
    # the cases of issue 14, point 6
    ("source", "follow", "false", r"\[source\] follow must be true or false"),
    ("refit", "every", -100, r"\[refit\] every must be an integer >= 0, got -100"),
    ("checkpoint", "every", 0, r"\[checkpoint\] every must be an integer >= 1, got 0"),
    ("refit", "candidates", [0, 2], r"\[refit\] candidates must be a non-empty list of integers >= 1"),
    ("refit", "n_init", 0, r"\[refit\] n_init must be an integer >= 1, got 0"),
    ("checkpoint", "every", "often", r"\[checkpoint\] every must be an integer >= 1, got 'often'"),
    # types: a bool is not an integer, a string is not a number, a list must hold the right things
    ("pipeline", "batch_size", True, r"\[pipeline\] batch_size must be an integer >= 1, got True"),
    ("pipeline", "batch_size", 2.5, r"\[pipeline\] batch_size"),
    ("pipeline", "max_records", -1, r"\[pipeline\] max_records"),
    ("pipeline", "features", "yes", r"\[pipeline\] features must be true or false"),
    ("anomaly", "quantile", 1.0, r"\[anomaly\] quantile must be a number in \(0, 1\), got 1.0"),
    ("anomaly", "quantile", "0.99", r"\[anomaly\] quantile"),
    ("anomaly", "threshold", float("nan"), r"\[anomaly\] threshold must be a finite number"),
    ("anomaly", "min_samples", 0, r"\[anomaly\] min_samples"),
    ("anomaly", "policy", "ignore", r"\[anomaly\] policy must be one of 'adapt', 'protect'"),
    ("refit", "reservoir_size", 0, r"\[refit\] reservoir_size"),
    ("refit", "max_iter", 0, r"\[refit\] max_iter"),
    ("refit", "seed", -1, r"\[refit\] seed must be an integer in \[0, 4294967295\]"),
    ("refit", "mode", "sliding", r"\[refit\] mode"),
    ("refit", "criterion", "hqc", r"\[refit\] criterion"),
    ("refit", "candidates", [], r"\[refit\] candidates"),
    ("refit", "candidates", ["3"], r"\[refit\] candidates"),
    ("checkpoint", "keep", 0, r"\[checkpoint\] keep"),
    ("checkpoint", "directory", 5, r"\[checkpoint\] directory must be a non-empty string"),
    ("source", "timeout", 0, r"\[source\] timeout must be a number of seconds > 0"),
    ("source", "fields", "a", r"\[source\] fields must be a non-empty list"),
    ("source", "delimiter", ";;", r"\[source\] delimiter"),
    ("source", "missing", "drop", r"\[source\] missing must be one of 'reject', 'nan'"),
    ("source", "max_idle_s", -1, r"\[source\] max_idle_s"),
    ("source", "header", 1, r"\[source\] header must be true or false"),
    ("cluster", "read_ahead", "yes", r"\[cluster\] read_ahead must be true or false"),
    ("cluster", "round_size", 0, r"\[cluster\] round_size"),
    # the model's keys are checked by the estimator's own constraints, at load
    ("model", "n_components", 0, r"\[model\] .*'n_components'"),
    ("model", "covariance_type", "fool", r"\[model\] .*'covariance_type'"),
    ("model", "halflife", "long", r"\[model\] .*'halflife'"),
])
def test_every_key_is_checked_at_load_and_named(section, key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config(_with(section, **{key: value}))


def test_sink_keys_are_checked():
    raw = {**BASE, "sinks": {"scores": {"type": "jsonl", "path": 3}}}
    with pytest.raises(ConfigError, match=r"\[sinks.scores\] path must be a non-empty string \(or omitted\), got 3"):
        parse_config(raw)
    raw = {**BASE, "sinks": {"scores": {"type": "csv", "path": "o.csv", "fields": "line"}}}
    with pytest.raises(ConfigError, match=r"\[sinks.scores\] fields must be a non-empty list"):
        parse_config(raw)


def test_valid_values_pass_and_defaults_are_valid():
    cfg = parse_config(_with("refit", every=5000, candidates=[2, 3], n_init=1, seed=0))
    assert cfg["refit"]["candidates"] == [2, 3]
    cfg = parse_config(_with("anomaly", threshold=12, quantile=0.5))
    assert cfg["anomaly"]["threshold"] == 12
    cfg = parse_config(_with("source", follow=False, timeout=0.5, max_idle_s=0))
    assert cfg["source"]["follow"] is False
    # every default passes its own spec
    for section, specs in SPECS.items():
        defaults = parse_config(BASE)[section]
        if section == "sinks":
            continue
        for key, spec in specs.items():
            if key in defaults and not (section == "source" and key in BASE["source"]):
                assert spec.check(defaults[key]) is None, (section, key, defaults[key])


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    cfg_file = folder / "job.toml"
    cfg_file.write_text('[source]\ntype = "jsonl"\npath = ["in/a.jsonl", "/abs/b.jsonl"]\n'
                        'fields = ["a"]\n[checkpoint]\ndirectory = "state"\n'
                        '[sinks.scores]\ntype = "jsonl"\npath = "out/scores.jsonl"\n')
    cfg = load_config(cfg_file)
    assert cfg["source"]["path"] == [str(folder / "in" / "a.jsonl"), "/abs/b.jsonl"]
    assert cfg["checkpoint"]["directory"] == str(folder / "state")
    assert cfg["sinks"]["scores"]["path"] == str(folder / "out" / "scores.jsonl")


def test_unreadable_config_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[source]")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_cli_names_the_key_in_one_line_with_exit_2(tmp_path):
    """A real `online-gmm run` on `every = "often"`: one line naming section and key, exit 2."""
    data = tmp_path / "in.jsonl"
    data.write_text('{"a": 1}\n')
    cfg = tmp_path / "job.toml"
    cfg.write_text('[source]\ntype = "jsonl"\npath = "in.jsonl"\nfields = ["a"]\n'
                   '[checkpoint]\ndirectory = "ck"\nevery = "often"\n'
                   '[sinks.scores]\ntype = "jsonl"\npath = "scores.jsonl"\n')
    res = subprocess.run([sys.executable, "-m", "online_gmm.cli", "run", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == ["Error: [checkpoint] every must be an integer >= 1, got 'often'"], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "job.toml"]


@pytest.mark.parametrize("sink, expected", [
    ({"type": "jsonl"}, r"\[sinks.scores\] type 'jsonl' needs 'path'"),
    ({"type": "csv", "path": "o.csv"}, r"\[sinks.scores\] type 'csv' needs 'fields'"),
    ({"type": "kafka", "topic": "t"}, r"\[sinks.scores\] type 'kafka' needs 'bootstrap_servers'"),
])
def test_a_sink_missing_what_its_type_needs_is_refused_at_load(sink, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config({**BASE, "sinks": {"scores": sink}})


# ------------------------------------------------------------------------ [model]: one table, two checks
def test_model_keys_are_checked_without_scikit_learn_in_one_line():
    """`[model]` is checked against online_gmm.model_spec.PARAMETERS: the same words as the
    estimator's own check, on one line, and no scikit-learn import (online-gmm run starts fast)."""
    with pytest.raises(ConfigError) as err:
        parse_config(_with("model", alpha=0.2))
    assert str(err.value) == ("[model] The 'alpha' parameter of OnlineGaussianMixture must be a float "
                              "in the range [0.5, 1.0]. Got 0.2 instead.")
    with pytest.raises(ConfigError, match=r"^\[model\] The 'warm_up' parameter of OnlineGaussianMixture "
                                          r"must be an int in the range \[1, inf\) or a str among "
                                          r"\{'auto'\}\. Got 'soon' instead\.$"):
        parse_config(_with("model", warm_up="soon"))
    probe = ("import sys\nfrom online_gmm.config import parse_config, ConfigError\n"
             "parse_config({'source': {'type': 'jsonl', 'path': 'x', 'fields': ['a']},"
             " 'model': {'n_components': 2, 'halflife': 5000.0, 'means_init': [[0.0], [1.0]]}})\n"
             "try:\n    parse_config({'source': {'type': 'jsonl', 'path': 'x', 'fields': ['a']},"
             " 'model': {'tol': -1}})\nexcept ConfigError:\n    pass\n"
             "print(sorted(m for m in ('sklearn', 'scipy.stats', 'pandas') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr + res.stdout


_PROBES = [0, 1, 2, 3, -1, 2**32 - 1, 2**32, 0.0, 0.3, 0.5, 0.7, 1.0, 1.5, 1e-3, -0.1,
           float("nan"), float("inf"), -float("inf"), True, False, None, "auto", "full", "tied",
           "kmeans", "k-means++", "fool", "3", [1.0], [[1.0, 0.0]], (), np.ones(2), np.int64(4),
           np.float64(0.6), np.bool_(True), np.float64("nan"), np.random.RandomState(0), object()]


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_model_check_agrees_with_the_estimators_scikit_learn_check(name):
    """For every parameter and a sweep of values, the light check accepts exactly what the
    estimator's scikit-learn constraints (converted from the same table) accept."""
    from sklearn.utils._param_validation import InvalidParameterError as SkError
    from sklearn.utils._param_validation import validate_parameter_constraints

    from online_gmm.estimator import OnlineGaussianMixture

    for value in _PROBES:
        try:
            validate_parameter_constraints(OnlineGaussianMixture._parameter_constraints, {name: value},
                                           "OnlineGaussianMixture")
            sklearn_ok = True
        except SkError:
            sklearn_ok = False
        try:
            check_params({name: value})
            light_ok = True
        except InvalidParameterError as exc:
            light_ok = False
            assert str(exc).startswith(f"The {name!r} parameter") and "\n" not in str(exc)
        assert light_ok == sklearn_ok, (name, value, light_ok, sklearn_ok)


def test_the_estimator_takes_its_parameters_from_the_table():
    from online_gmm.estimator import OnlineGaussianMixture

    signature = inspect.signature(OnlineGaussianMixture.__init__).parameters
    assert {k: p.default for k, p in signature.items() if k != "self"} == DEFAULTS
    assert list(OnlineGaussianMixture._parameter_constraints) == list(PARAMETERS)
    assert OnlineGaussianMixture().get_params() == ModelSpec().get_params()
    with pytest.raises(TypeError, match="'n_component'"):
        ModelSpec(n_component=3)


def test_check_random_state_is_scikit_learns():
    """The same generators, hence the same random streams (checkpoints and resumes rely on them)."""
    from sklearn.utils import check_random_state as sk_check

    assert check_random_state(None) is sk_check(None) is np.random.mtrand._rand
    rng = np.random.RandomState(3)
    assert check_random_state(rng) is rng
    for seed in (0, 7, np.int64(2**32 - 1)):
        np.testing.assert_array_equal(check_random_state(seed).randint(1 << 30, size=5),
                                      sk_check(seed).randint(1 << 30, size=5))
    with pytest.raises(ValueError, match="cannot be used to seed"):
        check_random_state("seven")
