"""Time to win: training seconds until the policy wins 30/30 against all three opponents.

    python benchmarks/time_to_win.py                       # the course recipe, seeds 0 1 2
    python benchmarks/time_to_win.py --label report-protocol opponent=random
    python benchmarks/time_to_win.py --label lr1e-4 hparams.lr=1e-4

Trains with ``train.py``'s own code path and overrides; every ``--every`` updates the full
Table I (30 games per opponent) is played with the current weights (its time is excluded).
Training goes on until ``--factor`` (5) times the time of the first 30/30, then the final
weights are evaluated again: does the policy still win 30/30 after 5x more training?
Records peak RSS too. Writes benchmarks/results/time_to_win-<label>.json.

It measures the course recipe (``+experiment=course``, the default run until 2026-12-01) unless
the overrides name another ``+experiment=``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from common import compose, peak_rss_mb, require_opponents, save


class StopAfterWin(pl.Callback):
    """Stop at ``factor`` x the training time of the first all-30/30 evaluation (or a cap)."""

    def __init__(self, factor: float, cap_seconds: float):
        self.factor, self.cap = factor, cap_seconds
        self.win_seconds = self.win_step = None
        self.stop_seconds = None  # training time (evaluation excluded) when it stopped

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        ev = trainer.eval_callback
        if self.win_seconds is None and ev.best_score and ev.best_score[0] >= 1.0 \
                and ev.best_step == trainer.global_step:
            self.win_seconds, self.win_step = ev.train_seconds(), trainer.global_step
        limit = self.cap if self.win_seconds is None else self.factor * self.win_seconds
        if ev.train_seconds() >= limit and self.stop_seconds is None:
            trainer.should_stop = True
            self.stop_seconds = ev.train_seconds()


class FinalWeights(pl.Callback):
    """Table I of the weights as they are at the end (not the best evaluation's)."""

    def on_train_end(self, trainer, pl_module):
        from battle_rl.evaluation import evaluate

        ev = trainer.eval_callback
        self.table = evaluate(pl_module.policy_net().eval(), ev.opponents, 30, seed=0,
                              evaluator=ev.evaluator)


RECIPE = "+experiment=course"  # the recipe measured unless the overrides name another


def run(seed: int, overrides: list[str], every: int, factor: float, cap: float,
        final_check: bool = True) -> dict:
    from battle_rl.training import train

    if not any(o.lstrip("+").startswith("experiment=") for o in overrides):
        overrides = [RECIPE, *overrides]
    cfg = compose([*overrides, f"seed={seed}", "logger=none", f"eval.every_n_steps={every}",
                   "eval.episodes=30", "eval.stop_win_rate=null", "eval.final_episodes=0",
                   "trainer.max_time=00:01:00:00", "trainer.max_steps=-1",
                   "trainer.enable_progress_bar=false", "print_config=false"])
    stop, final = StopAfterWin(factor, cap), FinalWeights()
    with tempfile.TemporaryDirectory(prefix="battle-rl-ttw-") as d:
        t0 = time.perf_counter()
        summary = train(cfg, Path(d), extra_callbacks=[stop, final] if final_check else [stop])
        wall = time.perf_counter() - t0
        history = [json.loads(ln) for ln in (Path(d) / "eval_history.jsonl").read_text().splitlines()]
    return {
        "seed": seed,
        "seconds_to_30_of_30": stop.win_seconds,
        "steps_to_30_of_30": stop.win_step,
        "trained_seconds": stop.stop_seconds,
        "trained_steps": summary["steps"],
        "wall_seconds_with_evaluations": wall,
        "final_weights": ({k: [v["win"], v["draw"], v["lose"]] for k, v in final.table.items()}
                          if final_check else None),
        "still_30_of_30": (all(v["win"] == 30 for v in final.table.values())
                           if final_check else None),
        "curve": [(round(h["eval/train_seconds"], 2), h["step"],
                   {k.split("/")[-1]: v for k, v in h.items() if k.startswith("eval/win_rate/")})
                  for h in history],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="*", help="train.py overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--label", default="default")
    ap.add_argument("--every", type=int, default=100, help="updates between evaluations")
    ap.add_argument("--factor", type=float, default=5.0)
    ap.add_argument("--cap", type=float, default=300.0, help="give up after this many seconds")
    args = ap.parse_args()
    require_opponents()
    runs = []
    for seed in args.seeds:
        r = run(seed, args.overrides, args.every, args.factor, args.cap)
        runs.append(r)
        print(f"seed {seed}: 30/30 after {r['seconds_to_30_of_30']} s "
              f"({r['steps_to_30_of_30']} updates); after {r['trained_seconds']:.1f} s: "
              f"{r['final_weights']} still 30/30: {r['still_30_of_30']}", flush=True)
    wins = [r["seconds_to_30_of_30"] for r in runs]
    result = {"label": args.label, "overrides": args.overrides, "every": args.every,
              "factor": args.factor, "runs": runs,
              "max_seconds_to_30_of_30": None if None in wins else max(wins),
              "all_still_30_of_30": all(r["still_30_of_30"] for r in runs),
              "peak_rss_mb": peak_rss_mb()}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    save(f"time_to_win-{args.label}", result)


if __name__ == "__main__":
    main()
