"""Batched evaluation: the course's protocol (Table I), many games stepped in lockstep.

Blue is the evaluated policy, red an opponent. Several environments run side by side; at every
cycle each team makes *one* forward pass over the observations of all its live agents in all
running games. Kills follow the course's rule (a reward above 4.5), the verdict needs a margin
of 5 kills, rewards are summed per team and divided by the team size (81).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from battle_rl.env import DEFAULT_REWARD, BattleEnv, winner
from battle_rl.networks import greedy_actions
from battle_rl.opponents import Opponent

EVAL_OPPONENTS = ("random", "pretrained", "final")


@dataclass
class EpisodeResult:
    seed: int
    blue_reward: float  # summed over the episode and the team, divided by the team size
    red_reward: float
    blue_kills: int
    red_kills: int
    cycles: int

    @property
    def winner(self) -> str:
        return winner(self.blue_kills, self.red_kills)


class Evaluator:
    """Plays N episodes of blue policy vs red opponent, ``n_envs`` games at a time.

    Keeps its environments between calls (evaluation during training reuses them).
    """

    def __init__(self, max_cycles: int = 300, map_size: int = 45, n_envs: int = 15,
                 reward: dict | None = None):
        self.max_cycles, self.map_size, self.n_envs = max_cycles, map_size, n_envs
        self.reward = dict(reward or DEFAULT_REWARD)
        self.envs: list[BattleEnv] = []

    def _envs(self, k: int) -> list[BattleEnv]:
        while len(self.envs) < k:
            self.envs.append(BattleEnv(self.map_size, self.max_cycles, self.reward))
        return self.envs[:k]

    def play(self, blue: nn.Module, red: Opponent, episodes: int, seed: int = 0
             ) -> list[EpisodeResult]:
        envs = self._envs(min(self.n_envs, episodes))
        results: list[EpisodeResult | None] = [None] * episodes
        next_episode = 0
        running: dict[int, dict] = {}  # env index -> episode record
        obs: dict[int, dict] = {}

        def start(i: int) -> None:
            nonlocal next_episode
            ep = next_episode
            next_episode += 1
            red.new_episode()
            obs[i] = envs[i].reset(seed=seed + ep)
            running[i] = {"episode": ep, "seed": seed + ep, "reward": {"red": 0.0, "blue": 0.0},
                          "kills": {"red": 0, "blue": 0}}

        for i in range(len(envs)):
            if next_episode < episodes:
                start(i)
        while running:
            ids = list(running)
            actions = {}
            for team, policy in (("blue", blue), ("red", red)):
                team_obs = np.concatenate([obs[i][team] for i in ids])
                alive = np.concatenate([envs[i].alive[team] for i in ids])
                if team == "blue":  # slot ids, for policies with an agent-id embedding
                    slots = np.tile(np.arange(envs[ids[0]].n_agents), len(ids))
                    acts = greedy_actions(policy, team_obs, alive, slots)
                else:
                    acts = policy.act(team_obs, alive)
                actions[team] = np.split(acts, len(ids))
            for k, i in enumerate(ids):
                step = envs[i].step({t: actions[t][k] for t in actions})
                rec = running[i]
                for t in ("red", "blue"):
                    rec["reward"][t] += float(step.reward[t].sum())
                    rec["kills"][t] += step.kills[t]
                obs[i] = step.obs
                if step.done:
                    n = envs[i].n_agents
                    results[rec["episode"]] = EpisodeResult(
                        seed=rec["seed"],
                        blue_reward=rec["reward"]["blue"] / n,
                        red_reward=rec["reward"]["red"] / n,
                        blue_kills=rec["kills"]["blue"],
                        red_kills=rec["kills"]["red"],
                        cycles=envs[i].cycle,
                    )
                    del running[i]
                    if next_episode < episodes:
                        start(i)
        return results  # type: ignore[return-value]


def summarize(results: list[EpisodeResult]) -> dict:
    """One opponent's row of Table I (and what eval.json holds for it)."""
    verdicts = [r.winner for r in results]
    blue = np.array([r.blue_reward for r in results])
    red = np.array([r.red_reward for r in results])
    return {
        "episodes": len(results),
        "win": verdicts.count("blue"),
        "draw": verdicts.count("draw"),
        "lose": verdicts.count("red"),
        "blue_reward": float(blue.mean()),
        "blue_reward_std": float(blue.std()),
        "red_reward": float(red.mean()),
        "red_reward_std": float(red.std()),
        "blue_kills": float(np.mean([r.blue_kills for r in results])),
        "red_kills": float(np.mean([r.red_kills for r in results])),
        "cycles": float(np.mean([r.cycles for r in results])),
    }


def evaluate(blue: nn.Module, opponents: dict[str, Opponent], episodes: int = 30,
             seed: int = 0, evaluator: Evaluator | None = None, **evaluator_args) -> dict:
    """Table I: ``{opponent: summary}`` for every opponent."""
    evaluator = evaluator or Evaluator(**evaluator_args)
    return {name: summarize(evaluator.play(blue, opp, episodes, seed))
            for name, opp in opponents.items()}


def format_table(table: dict) -> str:
    """Table I in the report's form: Win / Draw / Lose and mean +- std rewards per team."""
    header = f"{'Opponent':<12} {'Win':>4} {'Draw':>5} {'Lose':>5}   {'Blue reward':>16}   " \
             f"{'Red reward':>16}   {'Kills B:R':>11}"
    lines = [header, "-" * len(header)]
    for name, row in table.items():
        lines.append(
            f"{name:<12} {row['win']:>4} {row['draw']:>5} {row['lose']:>5}   "
            f"{row['blue_reward']:>7.3f} +- {row['blue_reward_std']:<6.3f}   "
            f"{row['red_reward']:>7.3f} +- {row['red_reward_std']:<6.3f}   "
            f"{row['blue_kills']:>5.1f}:{row['red_kills']:<5.1f}"
        )
    return "\n".join(lines)


def write_eval_json(table: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2))
    return path


def run_evaluation(cfg, run_dir: Path) -> dict:
    """The task behind ``evaluate.py``: checks, then Table I, printed and saved to eval.json."""
    import torch
    from hydra.utils import to_absolute_path

    from battle_rl.config import ConfigError, validate_env
    from battle_rl.networks import load_policy
    from battle_rl.opponents import check_opponent, make_opponent

    validate_env(cfg)
    if not cfg.opponents:
        raise ConfigError("opponents=[] is not allowed: name at least one of "
                          + ", ".join(EVAL_OPPONENTS))
    if int(cfg.episodes) < 1:
        raise ConfigError(f"episodes={cfg.episodes} is not allowed: an integer >= 1")
    odir = Path(to_absolute_path(str(cfg.opponents_dir)))
    for name in cfg.opponents:
        check_opponent(name, odir)
    torch.set_num_threads(int(cfg.threads))
    policy = load_policy(to_absolute_path(str(cfg.checkpoint)))
    opponents = {name: make_opponent(name, odir, seed=cfg.seed) for name in cfg.opponents}
    table = evaluate(policy, opponents, episodes=int(cfg.episodes), seed=int(cfg.seed),
                     max_cycles=int(cfg.max_cycles), map_size=int(cfg.map_size),
                     n_envs=int(cfg.n_envs))
    print(format_table(table), flush=True)
    path = write_eval_json(table, run_dir / "eval.json")
    print(path, flush=True)
    return table
