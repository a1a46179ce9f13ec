"""Algorithms at equal wall-clock budgets, compared head to head in a tournament.

Every (algorithm, seed) trains through ``train.py`` for the same wall-clock time
(``trainer.max_time``: rollouts, updates and whatever else the run does), with no early stop and
no evaluation during training by default, so the whole budget trains and the exported policy
holds the last weights. The policies then play a round-robin tournament
(``battle_rl.league.tournament``: every pair, both sides, Elo with 95% intervals) together with the
scripted agent and the shipped champion (``--with`` changes the guests).

    python benchmarks/equal_budget.py --algos ddqn mfq vdn qmix --minutes 5 --seeds 0
    python benchmarks/equal_budget.py --algos ddqn mfq --minutes 1 --episodes 5   # a quick look
    python benchmarks/equal_budget.py --algos ddqn mfq --minutes 5 --extra mfq:algo.temperature=1

Any ``algo=`` name of ``conf/algo/`` works (those added later too): each run is
``python train.py algo=NAME`` with that algorithm's own defaults. Writes
``benchmarks/results/equal_budget-<minutes>min.json`` (training facts, ratings, head to head,
every game) and ``.md`` (the tables and the command), and keeps the runs and the tournament's
own files under ``benchmarks/results/runs/equal_budget-<minutes>min/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def relative(path: Path) -> str:
    """A path as the results files keep it: relative to the project root."""
    return os.path.relpath(path, ROOT)


def duration(seconds: int) -> str:
    """Lightning's DD:HH:MM:SS."""
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_one(algo: str, seed: int, seconds: int, run_dir: Path, threads: int,
              extra: list[str]) -> dict:
    overrides = [
        # play=inline: one process per run, the same CPU for every algorithm (DDQN's recipe
        # would add an actor process that PPO cannot have)
        f"algo={algo}", f"seed={seed}", f"threads={threads}", "play=inline", "logger=csv",
        f"trainer.max_time={duration(seconds)}", "trainer.max_steps=-1",
        "trainer.enable_progress_bar=false", "eval.every_n_steps=0", "eval.final_episodes=0",
        "eval.stop_win_rate=null", "eval.max_train_seconds=null", "print_config=false",
        f"hydra.run.dir={run_dir}", *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    record = {"algo": algo, "seed": seed, "name": f"{algo}-s{seed}",
              "command": "python train.py " + " ".join(overrides),
              "wall_seconds": round(time.perf_counter() - t0, 1),
              "returncode": proc.returncode, "policy": relative(run_dir / "policy.pt")}
    if proc.returncode != 0:
        record["error"] = proc.stderr[-2000:]
        return record
    return {**record, **run_facts(run_dir)}


def run_facts(run_dir: Path) -> dict:
    """Updates, episodes and cycles of a finished run, from its last checkpoint."""
    from battle_rl.safe_load import torch_load

    ckpt = torch_load(run_dir / "checkpoints" / "last.ckpt")
    rollout = ckpt.get("rollout") or {}
    return {"updates": ckpt["global_step"], "episodes": rollout.get("episodes"),
            "cycles": rollout.get("cycles")}


def markdown(meta: dict, runs: list[dict], tournament_md: str) -> str:
    lines = [f"# Equal budgets: {meta['minutes']:g} min of training each", "",
             f"Command: `{meta['command']}`", "",
             f"{meta['cpu_count']} CPU cores, {meta['threads']} torch thread(s) per run, "
             f"{meta['jobs']} run(s) at a time; load average at the end: "
             f"{', '.join(f'{x:.1f}' for x in meta['load_average_at_end'])}. Each run: "
             f"`trainer.max_time`, no early stop, no evaluation during training (the policy is "
             f"the last weights), the algorithm's own defaults otherwise.", "",
             "| agent | updates | episodes | cycles | wall (s, start-up included) |",
             "|---|---:|---:|---:|---:|"]
    for r in runs:
        if r["returncode"]:
            lines.append(f"| {r['name']} | failed (exit {r['returncode']}) | | | |")
        else:
            lines.append(f"| {r['name']} | {r['updates']} | {r['episodes']} | {r['cycles']} | "
                         f"{r['wall_seconds']} |")
    body = tournament_md.split("\n", 1)[1] if tournament_md.startswith("# ") else tournament_md
    return "\n".join(lines) + "\n\n## Tournament\n" + body.replace("\n## ", "\n### ")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", required=True, help="conf/algo/ names")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall clock per run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--with", dest="guests", nargs="*", default=["scripted", "champion"],
                   help="other tournament agents (random, scripted, pretrained, final, "
                   "champion, or policy files)")
    p.add_argument("--episodes", type=int, default=10, help="games per side per pair")
    p.add_argument("--max-cycles", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once")
    p.add_argument("--workers", type=int, default=2, help="tournament threads")
    p.add_argument("--extra", action="append", default=[],
                   help="ALGO:key=value override for one algorithm's runs (repeatable)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tournament-only", action="store_true",
                   help="reuse the trained runs of an earlier call, replay the tournament")
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")

    from battle_rl.config import compose_overrides
    from battle_rl.errors import ConfigError

    seconds = round(args.minutes * 60)
    if seconds < 1 or args.episodes < 1:
        print("error: --minutes must be at least 1 s and --episodes >= 1", file=sys.stderr)
        return 2
    try:  # every algorithm name must compose, before anything trains
        for algo in args.algos:
            compose_overrides("config", [f"algo={algo}"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = {a: [e.split(":", 1)[1] for e in args.extra if e.split(":", 1)[0] == a]
             for a in args.algos}
    stem = f"equal_budget-{args.minutes:g}min"
    out = Path(args.out)
    work = out / "runs" / stem  # runs and the tournament's own files (not committed)
    jobs = [(a, s) for a in args.algos for s in args.seeds]

    def job(j):
        algo, seed = j
        run_dir = work / "runs" / f"{algo}-s{seed}"
        if args.tournament_only:
            return {"algo": algo, "seed": seed, "name": f"{algo}-s{seed}", "returncode": 0,
                    "policy": relative(run_dir / "policy.pt"), "wall_seconds": None,
                    **run_facts(run_dir)}
        print(f"training {algo} seed {seed} for {seconds} s", flush=True)
        return train_one(algo, seed, seconds, run_dir, args.threads, extra[algo])

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(job, jobs))
    for r in runs:
        if r["returncode"]:
            print(f"{r['name']} failed:\n{r.get('error', '')}", file=sys.stderr)

    import torch

    from battle_rl.league import tournament

    torch.set_num_threads(args.threads)
    agents = [f"{r['name']}={ROOT / r['policy']}" for r in runs if not r["returncode"]]
    agents += args.guests
    opponents_dir = os.environ.get("BATTLE_RL_OPPONENTS_DIR",
                                   str(ROOT.parent / "shared" / "opponents"))
    summary = tournament.run(agents, work / "tournament", episodes=args.episodes,
                             max_cycles=args.max_cycles, workers=args.workers,
                             opponents_dir=opponents_dir, log=lambda m: print(m, flush=True))
    meta = {"minutes": args.minutes, "seeds": args.seeds, "algos": args.algos,
            "threads": args.threads, "jobs": args.jobs, "episodes": args.episodes,
            "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
            "command": "python benchmarks/equal_budget.py "
                       + " ".join(sys.argv[1:] if argv is None else argv)}
    games = json.loads((work / "tournament" / "results.json").read_text())["games"]
    (out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "runs": runs, **summary, "games": games}, indent=1))
    md = markdown(meta, runs, (work / "tournament" / "results.md").read_text())
    (out / f"{stem}.md").write_text(md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
