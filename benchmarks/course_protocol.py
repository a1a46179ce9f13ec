"""The course's evaluation, turn by turn: the reference that battle-rl's batched evaluator
must agree with, and the baseline of its speed benchmark.

A faithful copy of the course's ``eval.py`` loop: the AEC API (``battle_v4.env``), one forward
pass per agent per turn, kills counted as rewards above 4.5 seen by ``env.last()``, a win
needing 5 kills more. Blue is the policy under test; red is random, ``red.pt`` or
``red_final.pt``.

    python benchmarks/course_protocol.py --policy outputs/.../policy.pt --episodes 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import OPPONENTS  # (it puts the checkout on sys.path)

from battle_rl.networks import load_course_net, load_policy  # noqa: E402


def run_course_eval(blue_net, red_net, episodes: int, max_cycles: int = 300, seed: int = 0):
    """The course loop; ``red_net=None`` is the random red team. Returns per-episode rows."""
    from magent2.environments import battle_v4

    env = battle_v4.env(map_size=45, max_cycles=max_cycles)
    rng = np.random.default_rng(seed)

    def policy(net, obs):
        x = torch.as_tensor(obs, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            return int(torch.argmax(net(x), dim=1)[0])

    rows = []
    n_per_team = len(env.possible_agents) // 2
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        kills = {"red": 0, "blue": 0}
        reward = {"red": 0.0, "blue": 0.0}
        for agent in env.agent_iter():
            obs, rew, termination, truncation, _ = env.last()
            team = agent.split("_")[0]
            kills[team] += rew > 4.5  # the course's rule (default rewards)
            reward[team] += rew
            if termination or truncation:
                action = None  # this agent has died
            elif team == "blue":
                action = policy(blue_net, obs)
            elif red_net is None:
                action = int(rng.integers(21))
            else:
                action = policy(red_net, obs)
            env.step(action)
        verdict = "draw"
        if kills["blue"] >= kills["red"] + 5:
            verdict = "blue"
        elif kills["red"] >= kills["blue"] + 5:
            verdict = "red"
        rows.append({"seed": seed + ep, "winner": verdict, "blue_kills": int(kills["blue"]),
                     "red_kills": int(kills["red"]), "cycles": env.unwrapped.frames,
                     "blue_reward": reward["blue"] / n_per_team,
                     "red_reward": reward["red"] / n_per_team})
    env.close()
    return rows


def table(rows):
    v = [r["winner"] for r in rows]
    return {"win": v.count("blue"), "draw": v.count("draw"), "lose": v.count("red"),
            "blue_reward": float(np.mean([r["blue_reward"] for r in rows])),
            "red_reward": float(np.mean([r["red_reward"] for r in rows])),
            "blue_kills": float(np.mean([r["blue_kills"] for r in rows])),
            "red_kills": float(np.mean([r["red_kills"] for r in rows])),
            "cycles": float(np.mean([r["cycles"] for r in rows]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="policy.pt (or any file evaluate.py takes)")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0, help="game i is played with reset(seed=SEED+i)")
    ap.add_argument("--opponents", default="random,pretrained,final")
    ap.add_argument("--opponents-dir", default=str(OPPONENTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blue = load_policy(args.policy)
    files = {"pretrained": "red.pt", "final": "red_final.pt"}
    results = {}
    for name in args.opponents.split(","):
        red = None if name == "random" else load_course_net(Path(args.opponents_dir) / files[name])
        t0 = time.perf_counter()
        rows = run_course_eval(blue, red, args.episodes, seed=args.seed)
        results[name] = table(rows) | {"seconds": time.perf_counter() - t0, "episodes": len(rows)}
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
