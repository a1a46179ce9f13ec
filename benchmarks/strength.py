"""Strength: a fixed gauntlet on both sides, and strength over wall-clock training time.

    python benchmarks/strength.py --policy runs/a/policy.pt [--policy b.pt ...]   # gauntlet only
    python benchmarks/strength.py --train --seeds 0 1 2 --label default          # the default run
    python benchmarks/strength.py --train --seeds 0 1 2 --label champion \\
        +experiment=champion trainer.max_time=00:00:15:00
    python benchmarks/strength.py --train --seeds 3 4 5 --label screen-lr --episodes 10 \\
        --curve-episodes 0 --only scripted passive champion-ref hparams.lr=2e-3  # a screening

The gauntlet is ``battle_rl.league.gauntlet`` (``battle-rl rate POLICY`` plays it without
training): ``random``, ``pretrained`` (``red.pt``), ``final``
(``red_final.pt``), ``scripted``, ``passive``, ``passive_strict``, the champion shipped on
2026-11-29 (``benchmarks/agents/champion-2026-11-29.pt``, the fixed reference), the champion
shipped now (``champion``, ``battle_rl/assets/champion.pt``) and the held-out
agents in ``benchmarks/agents/heldout-*.pt`` (trained with other seeds and recipes and kept out
of every training pool: see ``benchmarks/agents/README.md``). Every policy plays every gauntlet
opponent ``--episodes`` games on each side (blue, and red through the mirror) with the batched
evaluator of the tournament; a course net missing from ``BATTLE_RL_OPPONENTS_DIR`` is left out
with a note.

With ``--train`` each seed trains with ``train.py``'s own code path and the given overrides; every
``--every`` seconds of training (evaluation excluded) a snapshot of the policy is kept, and after
training each snapshot plays the gauntlet with ``--curve-episodes`` games per side: the
time-to-strength curve. The final ``policy.pt`` plays the full gauntlet.

Prints W-D-L per side, kills and kills conceded per game, and Elo with 95% intervals (all
policies and opponents rated together). Writes ``benchmarks/results/strength-<label>.json``, and
with ``--train`` the curve as ``strength-<label>.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from common import OPPONENTS, RESULTS, ROOT, compose, machine

from battle_rl.league import gauntlet
from battle_rl.league.gauntlet import BUILT_IN, markdown, per_side, score  # noqa: F401

AGENTS = ROOT / "benchmarks" / "agents"
REFERENCE = AGENTS / gauntlet.REFERENCE


def gauntlet_specs(only: list[str] | None = None) -> list[str]:
    """The gauntlet's agents as tournament specs (name=agent); missing course nets left out;
    ``only``: just the agents of these names."""
    return gauntlet.gauntlet_specs(only, OPPONENTS, AGENTS, log=lambda m: print(m, flush=True))


class Snapshots(pl.Callback):
    """Keeps the policy (TorchScript) every ``every`` seconds of training, evaluation excluded
    (the evaluation callback's clock; the wall clock without one)."""

    def __init__(self, every: float, folder: Path):
        self.every, self.folder, self.taken = every, folder, []
        self._start = None

    def _seconds(self, trainer) -> float:
        ev = trainer.eval_callback
        return ev.train_seconds() if ev is not None else time.perf_counter() - self._start

    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._seconds(trainer) >= self.every * (len(self.taken) + 1):
            self._take(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if not self.taken or self.taken[-1]["step"] != trainer.global_step:
            self._take(trainer, pl_module)  # the curve ends where training ended

    def _take(self, trainer, pl_module) -> None:
        from battle_rl.networks import export_policy

        path = export_policy(pl_module.policy_net(), self.folder / f"t{len(self.taken)}.pt")
        self.taken.append({"seconds": round(self._seconds(trainer), 1),
                           "step": trainer.global_step, "path": str(path)})


def play(policies: dict[str, str], episodes: int, seed: int, workers: int, log=print,
         max_cycles: int = 300, only: list[str] | None = None) -> list:
    """Every policy against every gauntlet opponent (``only``: those of these names),
    ``episodes`` games on each side."""
    return gauntlet.play(policies, episodes, seed, workers, log, max_cycles, only,
                         OPPONENTS, AGENTS)


def train_seed(seed: int, overrides: list[str], every: float, folder: Path) -> dict:
    from battle_rl.training import train

    cfg = compose([f"seed={seed}", "logger=csv", "print_config=false",
                   "trainer.enable_progress_bar=false", *overrides])
    run_dir = folder / f"seed{seed}"
    snaps = Snapshots(every, run_dir / "strength_snapshots")
    t0 = time.perf_counter()
    summary = train(cfg, run_dir, extra_callbacks=[snaps])
    return {"seed": seed, "command_seconds": round(time.perf_counter() - t0, 1),
            "train_seconds": round(summary["train_seconds"], 1), "steps": summary["steps"],
            "policy": summary["policy"], "policy_source": summary["policy_source"],
            "table_i": summary.get("eval"), "snapshots": snaps.taken}


def plot_curve(runs: list[dict], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        xs = [s["seconds"] for s in run["snapshots"]]
        ax.plot(xs, [s["score"] for s in run["snapshots"]], "o-", label=f"seed {run['seed']}")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("gauntlet score (win 1, draw 1/2)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"strength over training time: {label}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", action="append", default=[], help="a policy.pt to measure "
                   "(NAME=PATH to name it); repeatable")
    p.add_argument("--train", action="store_true", help="train first (overrides follow)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--every", type=float, default=30.0, help="snapshot every N training seconds")
    p.add_argument("--episodes", type=int, default=30, help="games per side per opponent")
    p.add_argument("--curve-episodes", type=int, default=10,
                   help="games per side per opponent for each snapshot of the curve (0: no "
                   "curve)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="play just these gauntlet opponents (a screening: e.g. --only scripted "
                   "passive champion-ref)")
    p.add_argument("--seed", type=int, default=0, help="game i is played with seed + i")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-cycles", type=int, default=300, help="cycles per gauntlet game")
    p.add_argument("--results", default=str(RESULTS), help="folder for the results files")
    p.add_argument("--label", default="policies")
    p.add_argument("--out", default=None, help="folder for the training runs (default: a "
                   "temporary folder)")
    args, overrides = p.parse_known_args(argv)
    if not args.train and not args.policy:
        p.error("give --policy PATH and/or --train")
    t0 = time.perf_counter()
    policies = {}
    for spec in args.policy:
        name, path = spec.split("=", 1) if "=" in spec else (Path(spec).parent.name or "policy",
                                                              spec)
        policies[name] = path
    runs = []
    if args.train:
        folder = Path(args.out or tempfile.mkdtemp(prefix="strength-"))
        for seed in args.seeds:
            run = train_seed(seed, overrides, args.every, folder)
            print(f"seed {seed}: {run['train_seconds']} s of training, whole command "
                  f"{run['command_seconds']} s", flush=True)
            for snap in run["snapshots"] if args.curve_episodes > 0 else []:
                games = play({"snapshot": snap["path"]}, args.curve_episodes, args.seed,
                             args.workers, log=lambda m: None, max_cycles=args.max_cycles,
                             only=args.only)
                snap["score"] = score(per_side(games, "snapshot"))
                print(f"  {snap['seconds']:>7.1f} s: gauntlet score {snap['score']:.2f}",
                      flush=True)
            runs.append(run)
            policies[f"{args.label}-s{seed}"] = run["policy"]
    games = play(policies, args.episodes, args.seed, args.workers,
                 log=lambda m: print(m, flush=True), max_cycles=args.max_cycles, only=args.only)
    ratings = gauntlet.ratings(games)
    tables = {name: per_side(games, name) for name in policies}
    for name, table in tables.items():
        print(markdown(name, table) + f"\n\ngauntlet score {score(table):.3f}\n", flush=True)
    print(gauntlet.ratings_markdown(ratings), flush=True)
    payload = {"label": args.label, "command": "python benchmarks/strength.py "
               + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
               "gauntlet": gauntlet_specs(args.only), "episodes_per_side": args.episodes,
               "policies": policies, "tables": tables,
               "scores": {n: score(t) for n, t in tables.items()}, "ratings": ratings,
               "runs": runs, "seconds": round(time.perf_counter() - t0, 1)}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"strength-{args.label}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}", flush=True)
    if runs and args.curve_episodes > 0:
        plot_curve(runs, results / f"strength-{args.label}.png", args.label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
