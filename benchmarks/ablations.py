"""Which choices of the course recipe matter, and by how much: time to 30/30 per variant.

    python benchmarks/ablations.py                  # every variant, seeds 0 1 2
    python benchmarks/ablations.py --only lr=1e-4 --seeds 0

Each variant changes one thing of the course recipe (``+experiment=course``); training stops at the first full-Table-I
30/30 against all three opponents (or at --cap seconds). Every finished run is appended to
benchmarks/results/ablations-runs.jsonl, and runs found there are not played again (so the
benchmark can be run in pieces; --fresh starts over). Writes benchmarks/results/ablations.json
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import RESULTS, machine, require_opponents, save
from time_to_win import run

VARIANTS = {
    "default": [],
    "opponent=random (the report's)": ["opponent=random"],
    "reward=default (no shaping)": ["reward=default"],
    "lr=1e-4 (the report's)": ["hparams.lr=1e-4"],
    "batch=128 (the report's)": ["hparams.batch_size=128"],
    "tau=0.005 (the report's)": ["hparams.tau=0.005"],
    "algo=dqn (plain max target)": ["algo=dqn"],
    "updates_per_cycle=2": ["hparams.updates_per_cycle=2"],
    "epsilon decay 6000 cycles (4x slower)": ["hparams.epsilon.decay=6000"],
    "both_teams=true (red's transitions too)": ["hparams.both_teams=true"],
    "opponent=final (one course net)": ["opponent=final"],
    "threads=2": ["threads=2"],
}


RUNS = RESULTS / "ablations-runs.jsonl"  # one line per finished (variant, seed) run


def recorded() -> dict[tuple[str, int], dict]:
    if not RUNS.is_file():
        return {}
    runs = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["seed"]): r for r in runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", help="variant names (or a prefix) to run")
    ap.add_argument("--cap", type=float, default=120.0)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--fresh", action="store_true",
                    help="forget the runs recorded in results/ablations-runs.jsonl")
    ap.add_argument("--report-only", action="store_true", help="only print the table")
    args = ap.parse_args()
    require_opponents()
    if args.fresh:
        RUNS.unlink(missing_ok=True)
    chosen = {k: v for k, v in VARIANTS.items()
              if not args.only or any(k.startswith(o) for o in args.only)}
    done = recorded()
    for name, overrides in chosen.items():
        for seed in [] if args.report_only else args.seeds:
            if (name, seed) in done:  # runs already measured are kept (resumable)
                continue
            # one torch thread unless the variant says (the recorded rows were measured so)
            pinned = [] if any(o.startswith("threads=") for o in overrides) else ["threads=1"]
            r = run(seed, [*pinned, *overrides], args.every, factor=1.0, cap=args.cap,
                    final_check=False)
            row = {"variant": name, "seed": seed, "overrides": overrides, "cap": args.cap,
                   "every": args.every, "machine": machine(),
                   **{k: r[k] for k in ("seconds_to_30_of_30", "steps_to_30_of_30",
                                        "trained_steps", "wall_seconds_with_evaluations")}}
            with RUNS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(name, seed)] = row
            print(f"{name} seed {seed}: {r['seconds_to_30_of_30']} s, "
                  f"{r['steps_to_30_of_30']} updates", flush=True)
    rows = {}
    for name, overrides in VARIANTS.items():
        runs = sorted((r for (v, _), r in done.items() if v == name), key=lambda r: r["seed"])
        if not runs:
            continue
        times = [r["seconds_to_30_of_30"] for r in runs]
        won = [t for t in times if t is not None]
        rows[name] = {"overrides": overrides, "seeds": [r["seed"] for r in runs],
                      "seconds": times, "updates": [r["steps_to_30_of_30"] for r in runs],
                      "caps": sorted({r["cap"] for r in runs}),
                      "median_seconds": statistics.median(won) if won else None,
                      "won": f"{len(won)}/{len(times)}"}
    print("\n| variant | seconds to 30/30 by seed | updates | median s | won within cap |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        secs = " ".join(f"{s}:" + ("-" if t is None else f"{t:.1f}")
                        for s, t in zip(row["seeds"], row["seconds"]))
        ups = " ".join("-" if u is None else str(u) for u in row["updates"])
        med = "-" if row["median_seconds"] is None else f"{row['median_seconds']:.1f}"
        cap = "/".join(f"{c:g}" for c in row["caps"])
        print(f"| {name} | {secs} | {ups} | {med} | {row['won']} ({cap} s) |")
    save("ablations", {"every": args.every, "variants": rows,
                       "runs": str(RUNS.relative_to(RESULTS.parent.parent))})


if __name__ == "__main__":
    main()
