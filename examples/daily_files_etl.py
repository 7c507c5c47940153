"""Mini-batch ETL over daily files: learn each day's file with partial_fit, score it, keep the model.

Every run picks up the days not yet processed (the model's state is a checkpoint next to the outputs),
so the job can run from cron once a day. Here the "daily files" are generated first.

    python examples/daily_files_etl.py --workdir /tmp/etl --days 5 --per-day 4000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from connectors.files import JSONLinesSink, JSONLinesSource
from online_gmm import OnlineGaussianMixture
from online_gmm.demo import DEMO_FIELDS, write_events


def make_days(folder: Path, days: int, per_day: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in range(days):
        path = folder / f"events-2026-11-{day + 1:02d}.jsonl.gz"
        if not path.exists():
            write_events(path, n=per_day, seed=100 + day)
        paths.append(path)
    return paths


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="etl-demo")
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--per-day", type=int, default=4000)
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    days = make_days(work / "incoming", args.days, args.per_day)
    state_file = work / "model.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"done": [], "stats": None}
    model = OnlineGaussianMixture(n_components=4, halflife=10_000, warm_up=1000, random_state=0)
    if state["stats"] is not None:  # continue from yesterday's statistics (plain JSON, no pickle)
        from online_gmm import SufficientStatistics
        model = OnlineGaussianMixture.from_statistics(SufficientStatistics.from_json(state["stats"]),
                                                      halflife=10_000, random_state=0)
    report = {}
    for path in days:
        if path.name in state["done"]:
            continue
        with JSONLinesSource(str(path), fields=DEMO_FIELDS) as src, \
                JSONLinesSink(str(work / "scored" / path.name.replace(".gz", ""))) as out:
            n_good = n_bad = 0
            for batch in src:                      # batches of 1000 records
                n_bad += len(batch.rejects)
                if not batch.X.shape[0]:
                    continue
                if hasattr(model, "weights_"):     # score with yesterday's model, before learning
                    logp = model.score_samples(batch.X)
                    out.write([{**m, "log_likelihood": float(v)} for m, v in zip(batch.meta, logp)])
                model.partial_fit(batch.X)
                n_good += batch.X.shape[0]
        state["done"].append(path.name)
        report[path.name] = {"good": n_good, "rejected": n_bad, "K": model.n_components}
        print(f"{path.name}: {n_good} records learned, {n_bad} rejected; "
              f"weights {np.round(model.weights_, 3).tolist()}")
    state["stats"] = model.stats_.to_json()
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_file)                        # atomic: a crash never leaves half a state
    return report


if __name__ == "__main__":
    main()
