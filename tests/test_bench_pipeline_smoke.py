"""Smoke test of ``benchmarks/bench_pipeline.py`` on a few thousand records: it runs every file path
and prints its anchors, a figure and a verdict per path, and a time share per part.

Timings are never asserted (at this size they are meaningless). What is asserted is that the
benchmark the issue's acceptance relies on still runs the pipeline as ``online-gmm run`` builds it,
and that its timers still hook the source, the model and the sinks: a renamed method would leave a
share at zero and the benchmark would silently put all the time under "other".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "bench_pipeline.py")
NUM = r"\d[\d,]*"
SHARE = r"\d+\.\d%"


def test_bench_pipeline_runs_every_file_path_and_times_its_parts():
    proc = subprocess.run([sys.executable, BENCH, "--records", "3000", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(rf"^anchors \(records/s\): msgspec {NUM}, orjson {NUM}, pyarrow\.json {NUM}; "
                     rf"partial_fit alone {NUM}$", out, re.M), out
    for path in ("jsonl -> jsonl", "csv -> jsonl", "parquet -> parquet"):
        for refits in ("-", "50000"):
            row = re.search(rf"^{re.escape(path)}\s+{refits}\s+({NUM})\s+(PASS|MISS) .*\n\s+time: (.*)$",
                            out, re.M)
            assert row, f"no row for {path}, refits {refits}:\n{out}"
            assert int(row.group(1).replace(",", "")) > 0
            shares = dict(re.findall(rf"(decode|model|encode\+write|flush|refits|checkpoints|other)\s+({SHARE})",
                                     row.group(3)))
            assert len(shares) == 7, row.group(3)
            for part in ("decode", "model", "encode+write", "checkpoints"):
                assert float(shares[part][:-1]) > 0, f"{path}: {part} timed at 0 ({row.group(3)})"
    assert out.rstrip().endswith(("ALL PASS", "SOME MISSED"))
