"""Table I wall time: battle-rl's batched evaluate.py against the course's turn-by-turn loop.

    python benchmarks/eval_speed.py --policy outputs/.../policy.pt
    python benchmarks/eval_speed.py            # trains a default policy first (about a minute)

Both play the same policy as blue against random, red.pt and red_final.pt, 30 games each,
300 cycles, default rewards, in the same run. Reports both wall times (whole commands, start-up
included) and their ratio, the same for the games alone (start-up left out on both sides), and
whether the two protocols give the same verdicts (writes benchmarks/results/eval_speed.json).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OPPONENTS, ROOT, require_opponents, save


def train_default_policy(workdir: Path) -> Path:
    run = workdir / "train"
    r = subprocess.run([sys.executable, "train.py", "logger=none", f"opponents_dir={OPPONENTS}",
                        f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return run / "policy.pt"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", help="policy to evaluate (default: train one with the defaults)")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--course-episodes", type=int, default=None,
                    help="games per opponent for the turn-by-turn loop (default: --episodes)")
    args = ap.parse_args()
    require_opponents()
    work = Path(tempfile.mkdtemp(prefix="battle-rl-evalspeed-"))
    policy = Path(args.policy) if args.policy else train_default_policy(work)

    # battle-rl: the whole command, start-up included
    t0 = time.perf_counter()
    r_batched = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={policy.resolve()}",
                                f"episodes={args.episodes}", f"opponents_dir={OPPONENTS}",
                                f"hydra.run.dir={work / 'eval'}"], cwd=ROOT,
                               capture_output=True, text=True)
    batched_seconds = time.perf_counter() - t0
    if r_batched.returncode != 0:
        sys.exit(r_batched.stderr[-2000:])
    print(r_batched.stdout)
    batched = json.loads((work / "eval" / "eval.json").read_text())

    # the course's loop, same policy, same machine, same run
    course_eps = args.course_episodes or args.episodes
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "course_protocol.py"),
                        f"--policy={policy.resolve()}", f"--episodes={course_eps}",
                        f"--opponents-dir={OPPONENTS}", f"--out={work / 'course.json'}"],
                       cwd=ROOT, capture_output=True, text=True)
    course_seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    course = json.loads((work / "course.json").read_text())
    scale = args.episodes / course_eps  # per-game cost is what is compared
    # the games alone, start-up (imports, loading, Hydra) left out on both sides
    played = re.search(r"played in ([0-9.]+) s", r_batched.stdout)
    batched_games = float(played.group(1)) if played else None
    course_games = sum(row["seconds"] for row in course.values())
    verdicts = {name: {"batched": [batched[name][k] for k in ("win", "draw", "lose")],
                       "course": [course[name][k] for k in ("win", "draw", "lose")]}
                for name in batched}
    results = {
        "policy": str(policy),
        "episodes_per_opponent": args.episodes,
        "course_episodes_per_opponent": course_eps,
        "batched_evaluate_py_seconds": batched_seconds,
        "course_turn_by_turn_seconds": course_seconds,
        "course_seconds_scaled_to_same_games": course_seconds * scale,
        "speedup": course_seconds * scale / batched_seconds,
        "games_only_seconds": {"batched": batched_games,
                               "course": course_games * scale},
        "games_only_speedup": (course_games * scale / batched_games) if batched_games else None,
        "verdicts_win_draw_lose": verdicts,
        "same_verdicts": all(v["batched"][0] / args.episodes == v["course"][0] / course_eps
                             for v in verdicts.values()),
    }
    print(json.dumps(results, indent=2))
    save("eval_speed", results)


if __name__ == "__main__":
    main()
