"""Batched evaluation: the course's protocol (Table I), many games stepped in lockstep.

Blue is the evaluated policy (a network, or any opponent-like policy: the tournament seats
scripted, random and mirrored agents there too), red an opponent. Several environments run side
by side; at every cycle each team makes *one* forward pass over the observations of all its
live agents in all running games (an MF-Q policy also gets each agent's mean action: its
team's actions in that game at the previous cycle). Kills follow the course's rule (a reward
above 4.5), the verdict needs a margin of 5 kills, rewards are summed per team and divided by
the team size (81).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from battle_rl.env import DEFAULT_REWARD, N_ACTIONS, OBS_SHAPE, BattleEnv, winner
from battle_rl.league.opponents import MirroredOpponent, NetOpponent, Opponent
from battle_rl.league.sides import Mirrored
from battle_rl.mean_field import mean_action
from battle_rl.outputs.plot import plot_table

BLUE_STREAM = 2**31  # a random blue team draws from game seed + this, not red's stream


def as_policy(player: nn.Module | Opponent, name: str = "blue") -> Opponent:
    """A network becomes its greedy policy (used as it is: mode and weights untouched)."""
    return player if isinstance(player, Opponent) else NetOpponent(player, name)


@dataclass
class EpisodeResult:
    seed: int
    blue_reward: float  # summed over the episode and the team, divided by the team size
    red_reward: float
    blue_kills: int
    red_kills: int
    cycles: int
    agent_steps: int = 0  # live agents of both teams, summed over the cycles (speed figures)

    @property
    def winner(self) -> str:
        return winner(self.blue_kills, self.red_kills)


class Evaluator:
    """Plays N episodes of blue policy vs red opponent, ``n_envs`` games at a time.

    Episode ``i`` is played with seed ``seed + i`` whatever the batching: a random red team
    gets its own random stream per game, so results do not depend on ``n_envs`` or
    ``workers``. With ``workers > 1`` the games are shared among that many threads, each with
    its own games and one-thread torch: MAgent's engine and torch both release the GIL, so
    the cores step games and run forward passes at the same time. Environments are kept
    between calls (evaluation during training reuses them).
    """

    def __init__(self, max_cycles: int = 300, map_size: int = 45, n_envs: int = 15,
                 reward: dict | None = None, workers: int = 1):
        self.max_cycles, self.map_size, self.n_envs = max_cycles, map_size, n_envs
        self.reward = dict(reward or DEFAULT_REWARD)
        self.workers = max(1, workers)
        self.envs: list[list[BattleEnv]] = [[] for _ in range(self.workers)]

    def _envs(self, worker: int, k: int) -> list[BattleEnv]:
        pool = self.envs[worker]
        while len(pool) < k:
            pool.append(BattleEnv(self.map_size, self.max_cycles, self.reward))
        return pool[:k]

    def play(self, blue: nn.Module | Opponent, red: Opponent, episodes: int, seed: int = 0
             ) -> list[EpisodeResult]:
        blue = as_policy(blue)
        workers = min(self.workers, episodes)
        if workers == 1:
            return self._play(0, blue, red, list(range(episodes)), seed)
        import threading

        import torch

        shares = [list(range(w, episodes, workers)) for w in range(workers)]
        results: list[list[EpisodeResult]] = [[] for _ in range(workers)]
        errors: list[BaseException] = []

        def work(w):
            try:
                results[w] = self._play(w, blue, red, shares[w], seed)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)

        threads_before = torch.get_num_threads()
        torch.set_num_threads(1)  # one core per worker
        try:
            pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        finally:
            torch.set_num_threads(threads_before)
        if errors:
            raise errors[0]
        merged = sorted((r for part in results for r in part), key=lambda r: r.seed)
        return merged

    def _play(self, worker: int, blue: Opponent, red: Opponent, episode_ids: list[int],
              seed: int) -> list[EpisodeResult]:
        envs = self._envs(worker, min(self.n_envs, len(episode_ids)))
        todo = list(reversed(episode_ids))
        results: list[EpisodeResult] = []
        running: dict[int, dict] = {}  # env index -> the game it plays
        obs: dict[int, dict] = {}

        def start(i: int) -> None:
            game_seed = seed + todo.pop()
            obs[i] = envs[i].reset(seed=game_seed)
            running[i] = {"seed": game_seed, "red": red.for_game(game_seed),
                          "blue": blue.for_game(game_seed + BLUE_STREAM),
                          "reward": {"red": 0.0, "blue": 0.0}, "kills": {"red": 0, "blue": 0},
                          # each team's mean action at the previous cycle (for MF-Q policies)
                          "mean": {"red": None, "blue": None}, "agent_steps": 0}

        for i in range(len(envs)):
            if todo:
                start(i)
        while running:
            ids = list(running)
            alive = {t: [envs[i].alive[t] for i in ids] for t in ("blue", "red")}
            acts = {}
            for team, policy in (("blue", blue), ("red", red)):
                if policy.stateless:  # one forward for the live agents of this team in all games
                    means = ([running[i]["mean"][team] for i in ids] if policy.uses_mean_action
                             else None)
                    acts[team] = self._act_live(policy, [obs[i][team] for i in ids], alive[team],
                                                means)
                else:
                    acts[team] = [running[i][team].act(obs[i][team], alive[team][k])
                                  for k, i in enumerate(ids)]
            for k, i in enumerate(ids):
                step = envs[i].step({"blue": acts["blue"][k], "red": acts["red"][k]})
                game = running[i]
                game["agent_steps"] += int(alive["blue"][k].sum() + alive["red"][k].sum())
                for t, policy in (("blue", blue), ("red", red)):
                    if policy.uses_mean_action:
                        game["mean"][t] = mean_action(acts[t][k], alive[t][k])
                for t in ("red", "blue"):
                    game["reward"][t] += float(step.reward[t].sum())
                    game["kills"][t] += step.kills[t]
                obs[i] = step.obs
                if step.done:
                    n = envs[i].n_agents
                    results.append(EpisodeResult(
                        seed=game["seed"],
                        blue_reward=game["reward"]["blue"] / n,
                        red_reward=game["reward"]["red"] / n,
                        blue_kills=game["kills"]["blue"],
                        red_kills=game["kills"]["red"],
                        cycles=envs[i].cycle,
                        agent_steps=game["agent_steps"],
                    ))
                    del running[i]
                    if todo:
                        start(i)
        return sorted(results, key=lambda r: r.seed)

    @staticmethod
    def _act_live(policy: Opponent, team_obs: list[np.ndarray], alive: list[np.ndarray],
                  means: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Actions by slot for every game, from one call over the live agents of all games:
        their rows are gathered once (dead slots are neither copied nor evaluated).
        ``means``: each game's mean action of the team (None: the game's first cycle), for
        policies that use it; every live agent of a game gets its game's."""
        rows = [np.flatnonzero(a) for a in alive]
        bounds = np.cumsum([0] + [len(r) for r in rows])
        live = np.empty((bounds[-1], *OBS_SHAPE), np.float32)
        for k, r in enumerate(rows):
            np.take(team_obs[k], r, axis=0, out=live[bounds[k]:bounds[k + 1]])
        rows_mean = None
        if means is not None:
            rows_mean = np.zeros((len(live), N_ACTIONS), np.float32)
            for k, m in enumerate(means):
                if m is not None:
                    rows_mean[bounds[k]:bounds[k + 1]] = m
        chosen = policy.act_rows(live, np.concatenate(rows), rows_mean) if len(live) else []
        acts = [np.zeros(len(a), np.int64) for a in alive]
        for k, r in enumerate(rows):
            acts[k][r] = chosen[bounds[k]:bounds[k + 1]]
        return acts


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


def evaluate_as_red(net: nn.Module, opponents: dict[str, Opponent], episodes: int = 30,
                    seed: int = 0, evaluator: Evaluator | None = None) -> dict:
    """Table I with the sides swapped: ``net`` (trained as blue) plays red through the mirror,
    each opponent plays blue through the mirror. Rows read from ``net``'s side: ``win`` and
    ``blue_kills`` are its own, as in :func:`evaluate`."""
    evaluator = evaluator or Evaluator()
    me = as_policy(Mirrored(net).eval())
    swap = {"win": "lose", "lose": "win", "blue_reward": "red_reward", "red_reward": "blue_reward",
            "blue_reward_std": "red_reward_std", "red_reward_std": "blue_reward_std",
            "blue_kills": "red_kills", "red_kills": "blue_kills"}
    return {name: {swap.get(k, k): v for k, v in
                   summarize(evaluator.play(MirroredOpponent(opp), me, episodes, seed)).items()}
            for name, opp in opponents.items()}


def format_table(table: dict, width: int = 80) -> str:
    """Table I in the report's form: Win / Draw / Lose and mean +- std rewards per team, and
    the mean kills. At most ``width`` columns (an 80-column terminal): a name too long for
    that is cut short with "…" (``eval.json`` keeps it whole)."""
    rest = 62  # the columns after the name, with room for a reward's std of 10 or more
    name_width = min(max([12, *map(len, table)]), width - rest)

    def name(text: str) -> str:
        return text if len(text) <= name_width else text[:name_width - 1] + "…"

    header = (f"{'Opponent':<{name_width}} {'Win':>3} {'Draw':>4} {'Lose':>4}  "
              f"{'Blue reward':>16}  {'Red reward':>16}  {'Kills B:R':>9}")
    lines = [header, "-" * len(header)]
    for key, row in table.items():
        lines.append(
            f"{name(key):<{name_width}} {row['win']:>3} {row['draw']:>4} {row['lose']:>4}  "
            f"{row['blue_reward']:>7.3f} +- {row['blue_reward_std']:<5.3f}  "
            f"{row['red_reward']:>7.3f} +- {row['red_reward_std']:<5.3f}  "
            f"{row['blue_kills']:>4.1f}:{row['red_kills']:<4.1f}".rstrip()
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

    from battle_rl.config import validate_eval
    from battle_rl.league.opponents import (SHIPPED, check_opponent, command_line_opponents,
                                            leave_out_missing, left_out_notice, make_opponent,
                                            write_opponents_record)
    from battle_rl.networks import load_policy
    from battle_rl.outputs.display import print_note

    validate_eval(cfg)
    odir = Path(to_absolute_path(str(cfg.opponents_dir)))
    # course opponents of the default list whose files are missing are left out (one note)
    names, left_out = leave_out_missing(list(cfg.opponents), odir, command_line_opponents())
    names = names or list(SHIPPED)
    if left_out:
        print_note(left_out_notice(left_out, odir))
    for name in names:
        check_opponent(name, odir)
    video = None
    if cfg.get("video", False):  # off: no render mode, no pygame / ffmpeg, nothing imported
        from battle_rl.outputs.video import VideoSettings

        video = VideoSettings.from_config(cfg)
    torch.set_num_threads(int(cfg.threads))
    policy = load_policy(to_absolute_path(str(cfg.checkpoint)))
    opponents = {name: make_opponent(name, odir, seed=cfg.seed) for name in names}
    t0 = time.perf_counter()
    table = evaluate(policy, opponents, episodes=int(cfg.episodes), seed=int(cfg.seed),
                     max_cycles=int(cfg.max_cycles), map_size=int(cfg.map_size),
                     n_envs=int(cfg.n_envs), workers=int(cfg.workers))
    table_seconds = time.perf_counter() - t0
    print(format_table(table), flush=True)
    print(f"played in {table_seconds:.2f} s ({len(table)} opponents x {int(cfg.episodes)} games, "
          f"{int(cfg.workers)} worker(s))", flush=True)
    if video is not None:
        from battle_rl.outputs.video import record_battles

        t0 = time.perf_counter()
        for name, v in record_battles(policy, opponents, run_dir / "videos", video,
                                      seed=int(cfg.seed), map_size=int(cfg.map_size)).items():
            print(f"video {name}: {v.paths['mp4']} and .gif, {v.frames} frames, blue "
                  f"{v.score.kills['blue']} - red {v.score.kills['red']} kills", flush=True)
        print(f"videos: {time.perf_counter() - t0:.1f} s on top of the table's "
              f"{table_seconds:.1f} s", flush=True)
    path = write_eval_json(table, run_dir / "eval.json")
    write_opponents_record(run_dir / "opponents.json", {"evaluation": names}, left_out, odir)
    plot_table(table, run_dir / "eval.png")
    print(path, flush=True)
    return table

