"""One run on one process or on two (Lightning DDP, `trainer=ddp`): which trains faster?

    python benchmarks/ddp.py                                   # 1 vs 2 processes, seeds 0 1 2
    python benchmarks/ddp.py --seeds 0 --updates 300 --cap 120 # a quick check

Runs ``train.py`` itself (DDP starts its processes by re-running the script), once per
process count and seed, the course recipe otherwise (``+experiment=course``, the default
recipe until 2026-12-01; its time to 30/30 against the course nets is what the second part reads):
1. throughput: ``--updates`` updates without evaluation; updates/s and agent-steps/s are the
   rates rank 0 logs (``perf/*`` in ``csv/metrics.csv``, the first log left out: warm-up),
   agent-steps/s scaled to every rank by the checkpoint's per-rank counters;
2. time to win: the full Table I (30 games per opponent) every ``--every`` updates (its time
   excluded, rank 0 plays it while the other rank waits), training stops at the first 30/30
   against all three; the training seconds and updates until then.
Writes benchmarks/results/ddp.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OPPONENTS, ROOT, require_opponents, save

# threads=auto: one process runs a thread per core, two DDP processes one thread each
PROCESSES = {1: ["+experiment=course", "trainer.devices=1", "threads=auto"],
             2: ["+experiment=course", "trainer=ddp", "threads=auto"]}


def train(run_dir: Path, overrides: list[str], timeout: float) -> float:
    """``python train.py`` with these overrides; returns its wall seconds."""
    env = dict(os.environ, BATTLE_RL_OPPONENTS_DIR=str(OPPONENTS))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides,
                        "print_config=false", "trainer.enable_progress_bar=false",
                        f"hydra.run.dir={run_dir}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(overrides)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def throughput(processes: int, seed: int, updates: int, timeout: float) -> dict:
    from battle_rl.safe_load import torch_load

    with tempfile.TemporaryDirectory(prefix="battle-rl-ddp-") as d:
        run = Path(d)
        wall = train(run, [*PROCESSES[processes], f"seed={seed}", f"trainer.max_steps={updates}",
                           "trainer.max_time=00:01:00:00", "eval.every_n_steps=0",
                           "eval.final_episodes=0", "logger=csv"], timeout)
        with (run / "csv" / "metrics.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("perf/updates_per_s")]
        ckpt = torch_load(run / "checkpoints" / "last.ckpt")
    ranks = ckpt.get("ranks") or [{"rollout": ckpt["rollout"]}]
    steps = [r["rollout"]["agent_steps"] for r in ranks]
    rows = rows[1:]  # the first rate includes the warm-up
    mean = lambda key: sum(float(r[key]) for r in rows) / len(rows)  # noqa: E731
    ups = mean("perf/updates_per_s")
    return {"processes": processes, "seed": seed, "updates": int(ckpt["global_step"]),
            "updates_per_s": ups,
            "agent_steps_per_s": mean("perf/agent_steps_per_s") * sum(steps) / steps[0],
            "batches_per_s": ups * processes,  # each update averages one batch per rank
            "wall_seconds": wall}


def time_to_win(processes: int, seed: int, every: int, cap: float, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="battle-rl-ddp-") as d:
        run = Path(d)
        wall = train(run, [*PROCESSES[processes], f"seed={seed}", "logger=none",
                           f"eval.every_n_steps={every}", "eval.episodes=30",
                           "eval.stop_win_rate=1.0", "eval.patience=1",
                           f"eval.max_train_seconds={cap}", "eval.final_episodes=0",
                           "trainer.max_steps=-1", "trainer.max_time=00:01:00:00"], timeout)
        history = [json.loads(ln) for ln in
                   (run / "eval_history.jsonl").read_text().splitlines()]
    won = next((h for h in history if h["eval/min_win_rate"] >= 1.0), None)
    return {"processes": processes, "seed": seed,
            "seconds_to_30_of_30": won["eval/train_seconds"] if won else None,
            "updates_to_30_of_30": won["step"] if won else None,
            "evaluations": len(history), "wall_seconds_with_evaluations": wall}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--updates", type=int, default=1000, help="updates of the throughput runs")
    ap.add_argument("--every", type=int, default=100, help="updates between evaluations")
    ap.add_argument("--cap", type=float, default=300.0, help="training seconds before giving up")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per train.py run")
    ap.add_argument("--note", default="", help="recorded with the results (e.g. the load)")
    args = ap.parse_args()
    require_opponents()
    rates, wins = [], []
    for seed in args.seeds:
        for n in PROCESSES:
            rates.append(throughput(n, seed, args.updates, args.timeout))
            print(json.dumps(rates[-1]), flush=True)
            wins.append(time_to_win(n, seed, args.every, args.cap, args.timeout))
            print(json.dumps(wins[-1]), flush=True)
    summary = {}
    for n in PROCESSES:
        r = [x for x in rates if x["processes"] == n]
        w = [x["seconds_to_30_of_30"] for x in wins if x["processes"] == n]
        summary[n] = {"updates_per_s": sum(x["updates_per_s"] for x in r) / len(r),
                      "agent_steps_per_s": sum(x["agent_steps_per_s"] for x in r) / len(r),
                      "seconds_to_30_of_30": w,
                      "max_seconds_to_30_of_30": None if None in w else max(w)}
    print(json.dumps(summary, indent=2))
    save("ddp", {"note": args.note, "seeds": args.seeds, "updates": args.updates,
                 "every": args.every, "cap": args.cap, "summary": summary,
                 "throughput": rates, "time_to_win": wins})


if __name__ == "__main__":
    main()
