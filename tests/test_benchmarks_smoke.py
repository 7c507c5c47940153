"""Smoke test of ``benchmarks/bench_core.py --quick``: it runs and prints every table row.

Timings are never asserted here (the quick sizes make them meaningless); only the table's shape.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "bench_core.py")
FLOAT = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
VERDICT = r"(?:PASS|MISS)"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, BENCH, "--quick", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def quick_output() -> str:
    return _run()


def test_em_rows(quick_output):
    for data in ("A", "B"):
        for cov in ("full", "tied", "diag", "spherical"):
            pattern = (rf"^EM\s+{data}\s+{cov}\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}\s+<=\S+\s+{FLOAT}\s+"
                       rf"{VERDICT}$")
            assert re.search(pattern, quick_output, re.M), f"missing EM row {data} {cov}"


def test_throughput_rows(quick_output):
    # ours, scikit-learn (one call), ratio, target, verdict, scikit-learn batched, its ratio
    for batch in (1, 100, 10000):
        assert re.search(rf"^PF\s+{batch}\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}\s+-\s+-\s+{FLOAT}\s+{FLOAT}$",
                         quick_output, re.M)
    assert re.search(rf"^PF\s+1000\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}\s+>=2\s+{VERDICT}\s+{FLOAT}\s+"
                     rf"{FLOAT}$", quick_output, re.M)


def test_quality_rows(quick_output):
    for data in ("A", "B"):
        pattern = (rf"^Q\s+{data}\s+0\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}\s+>=-\S+\s+{FLOAT}\s+{FLOAT}\s+"
                   rf"{FLOAT}\s+<=\S+\s+{VERDICT}$")
        assert re.search(pattern, quick_output, re.M), f"missing quality row {data}"


def test_float32_rows(quick_output):
    # float64 seconds, float32 seconds, their ratio, per data set and covariance type
    for data in ("A", "B"):
        for cov in ("full", "tied", "diag", "spherical"):
            assert re.search(rf"^DT\s+{data}\s+{cov}\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}$", quick_output,
                             re.M), f"missing float32 row {data} {cov}"


def test_torch_rows(quick_output):
    # seconds per EM iteration on NumPy and on PyTorch tensors (where PyTorch is installed)
    if "(e) PyTorch is not installed" in quick_output:
        pytest.skip("PyTorch is not installed: bench_core prints no (e) rows")
    for data in ("A", "B"):
        for source in ("numpy", "torch:cpu"):
            assert re.search(rf"^TO\s+{data}\s+{source}\s+{FLOAT}\s+{FLOAT}\s+{FLOAT}$",
                             quick_output, re.M), f"missing PyTorch row {data} {source}"


def test_summary_and_agreement(quick_output):
    assert re.search(r"^summary: \d+ target\(s\) missed$", quick_output, re.M)
    # both libraries did the same work: the lower bounds agree
    for agree in re.findall(rf"^EM\s+\S+\s+\S+\s+(?:{FLOAT}\s+){{3}}<=\S+\s+({FLOAT})", quick_output, re.M):
        assert float(agree) < 1e-6


def test_only_selects_a_part():
    out = _run("--only", "b", "--data", "A")
    assert re.search(r"^PF\s+1000\s", out, re.M)
    assert not re.search(r"^(EM|Q)\s", out, re.M)
