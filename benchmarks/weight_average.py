"""Weight averaging, paired: a run's last weights against the mean of its weights over the end
of the run, from the same runs.

    python benchmarks/weight_average.py --seeds 3 4 5 --after 0.5 0.65 0.8 0.9 \\
        --opponents scripted passive --label default
    python benchmarks/weight_average.py --seeds 0 1 2 --after 0.5 0.7 \\
        --opponents champion-ref scripted passive --label champion \\
        +experiment=champion trainer.max_time=00:00:15:00

Each seed trains once with ``train.py``'s code path and the given overrides, with the run's own
averaging off (``hparams.weight_average.after=null``: the run exports what it would without
it). Alongside, one ``WeightAverage`` per ``--after`` keeps the running mean of the policy
network's weights from that fraction of the budget (what ``hparams.weight_average.after``
would export). Then the run's policy and every mean play the chosen gauntlet opponents
(``benchmarks/strength.py``'s names) ``--episodes`` games on each side. Paired: two runs of one
seed differ a lot at two threads and a time budget, two policies of one run do not differ by
that. Prints W-D-L per side and points (a win 1, a draw 1/2) per policy, and the totals over
the seeds; writes ``benchmarks/results/weight-average-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import RESULTS, compose, machine
from strength import per_side, play

from battle_rl.callbacks import WeightAverage
from battle_rl.networks import export_policy


class Alongside(WeightAverage):
    """The mean of the weights, kept next to the run: the run's own weights stay its own."""

    def on_train_end(self, trainer, pl_module):
        pass


def points(table: dict) -> float:
    return sum(r["win"] + r["draw"] / 2 for sides in table.values() for r in sides.values())


def main(argv: list[str] | None = None) -> int:
    from battle_rl.training import train

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--after", type=float, nargs="+", default=[0.5, 0.65, 0.8, 0.9],
                   help="fractions of the budget the means start at")
    p.add_argument("--opponents", nargs="+", default=["scripted", "passive"],
                   help="gauntlet opponents (benchmarks/strength.py's names)")
    p.add_argument("--episodes", type=int, default=20, help="games per side per opponent")
    p.add_argument("--max-cycles", type=int, default=300, help="cycles per game")
    p.add_argument("--results", default=str(RESULTS), help="folder for the results file")
    p.add_argument("--label", default="default")
    p.add_argument("--out", default=None, help="folder for the training runs")
    args, overrides = p.parse_known_args(argv)
    folder = Path(args.out or tempfile.mkdtemp(prefix="weight-average-"))
    t0, runs, totals = time.perf_counter(), [], {}
    for seed in args.seeds:
        cfg = compose([f"seed={seed}", "logger=none", "print_config=false",
                       "trainer.enable_progress_bar=false", "eval.final_episodes=0", *overrides,
                       "hparams.weight_average.after=null"])
        run_dir = folder / f"seed{seed}"
        means = {after: Alongside(after) for after in args.after}
        summary = train(cfg, run_dir, extra_callbacks=list(means.values()))
        policies = {"run": summary["policy"]}
        for after, mean in means.items():
            if mean.averaged():
                policies[f"mean-from-{after}"] = str(export_policy(
                    mean.average.module, run_dir / f"mean-from-{after}.pt"))
        games = play(policies, args.episodes, 0, 2, log=lambda m: None,
                     max_cycles=args.max_cycles, only=args.opponents)
        tables = {name: per_side(games, name) for name in policies}
        print(f"seed {seed}: {summary['steps']} updates ({summary['policy_source']})", flush=True)
        for name, table in tables.items():
            rows = " | ".join(f"{opp} {side} {r['win']}-{r['draw']}-{r['lose']}"
                              for opp, sides in table.items() for side, r in sides.items())
            print(f"  {name:>16}: {points(table):5.1f} points | {rows}", flush=True)
            totals[name] = totals.get(name, 0.0) + points(table)
        runs.append({"seed": seed, "steps": summary["steps"],
                     "policy_source": summary["policy_source"],
                     "averaged": {str(a): m.averaged() for a, m in means.items()},
                     "tables": tables, "points": {n: points(t) for n, t in tables.items()}})
    games_each = 2 * args.episodes * len(args.opponents) * len(args.seeds)
    print(f"totals over {len(args.seeds)} seeds ({games_each} games each): "
          + ", ".join(f"{n} {v:.1f}" for n, v in totals.items()), flush=True)
    payload = {"label": args.label, "command": "python benchmarks/weight_average.py "
               + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
               "opponents": args.opponents, "episodes_per_side": args.episodes,
               "runs": runs, "totals": totals, "seconds": round(time.perf_counter() - t0, 1)}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"weight-average-{args.label}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
