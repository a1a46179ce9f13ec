"""Which choices of the default recipe matter, and by how much: time to 30/30 per variant.

    python benchmarks/ablations.py                  # every variant, seeds 0 1 2
    python benchmarks/ablations.py --only lr=1e-4 --seeds 0

Each variant changes one thing of the default recipe; training stops at the first full-Table-I
30/30 against all three opponents (or at --cap seconds). Writes
benchmarks/results/ablations.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics

from common import require_opponents, save
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", help="variant names (or a prefix) to run")
    ap.add_argument("--cap", type=float, default=120.0)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args()
    require_opponents()
    chosen = {k: v for k, v in VARIANTS.items()
              if not args.only or any(k.startswith(o) for o in args.only)}
    rows = {}
    for name, overrides in chosen.items():
        times = []
        for seed in args.seeds:
            r = run(seed, overrides, args.every, factor=1.0, cap=args.cap, final_check=False)
            times.append(r["seconds_to_30_of_30"])
            print(f"{name} seed {seed}: {r['seconds_to_30_of_30']} s, "
                  f"{r['steps_to_30_of_30']} updates", flush=True)
        won = [t for t in times if t is not None]
        rows[name] = {"overrides": overrides, "seconds": times,
                      "median_seconds": statistics.median(won) if won else None,
                      "won": f"{len(won)}/{len(times)}"}
    print(f"\n| variant | seconds to 30/30 (seeds {' '.join(map(str, args.seeds))}) | median | won |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        secs = " ".join("-" if t is None else f"{t:.1f}" for t in row["seconds"])
        med = "-" if row["median_seconds"] is None else f"{row['median_seconds']:.1f}"
        print(f"| {name} | {secs} | {med} | {row['won']} |")
    save("ablations", {"cap_seconds": args.cap, "every": args.every, "seeds": args.seeds,
                       "variants": rows})


if __name__ == "__main__":
    main()
