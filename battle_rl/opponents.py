"""Red-team policies: random, the course's networks, and a per-episode mix of them.

An opponent maps a team's observations (N, 13, 13, 5) and alive mask (N,) to N actions, in
one batched call. ``new_episode()`` lets a mix choose who plays the next episode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from battle_rl.config import OPPONENT_NAMES
from battle_rl.env import N_ACTIONS, OBS_SHAPE
from battle_rl.errors import ConfigError
from battle_rl.networks import greedy_actions, load_course_net

COURSE_FILES = {"pretrained": "red.pt", "final": "red_final.pt"}
SOURCE = "https://github.com/giangbang/RL-final-project-AIT-3007"


class Opponent:
    name = "opponent"
    # True: act() depends on the observations only, so one call may serve many games at once
    stateless = False

    def act(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def new_episode(self) -> None:
        """Called before each episode."""

    def for_game(self, seed: int) -> "Opponent":
        """The instance that plays one evaluation game (its own random stream, so results do
        not depend on which games run side by side)."""
        return self

    def state_dict(self) -> dict:
        """Random state, saved with checkpoints so a resumed run draws the same numbers."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RandomOpponent(Opponent):
    name = "random"

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    def act(self, obs, alive):
        return self.rng.integers(0, N_ACTIONS, len(obs))

    def for_game(self, seed):
        return RandomOpponent(seed)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class NetOpponent(Opponent):
    """Greedy actions of a Q-network (one forward for the whole team)."""

    stateless = True

    def __init__(self, net: nn.Module, name: str):
        self.net, self.name = net.eval(), name

    def act(self, obs, alive):
        return greedy_actions(self.net, obs, alive)


class ScriptedOpponent(Opponent):
    """A hand-written team, batched over agents (numpy, no network).

    Each agent attacks the weakest adjacent enemy if there is one; otherwise it moves toward
    the nearest visible enemy, or toward its visible allies when it sees more enemies than
    allies, or, seeing no enemy, advances toward the enemy's side (``advance_dx``: +1 for
    red, which starts at small x; -1 for blue). Moves into occupied cells are avoided.
    """

    name = "scripted"
    stateless = True

    def __init__(self, advance_dx: int = 1):
        from battle_rl.sides import ATTACKS, MOVES

        self.advance_dx = advance_dx
        c = OBS_SHAPE[0] // 2
        self.neighbours = np.array([(c + dy, c + dx) for dy, dx in ATTACKS])
        self.moves = np.array(MOVES)  # (13, 2) as (dy, dx)
        self.dest = self.moves + c
        ys, xs = np.mgrid[-c:c + 1, -c:c + 1]
        self.grid = np.stack([ys, xs], -1).reshape(-1, 2)  # cell -> (dy, dx)
        self.distance = np.abs(self.grid).sum(1)

    def act(self, obs, alive):
        n = len(obs)
        enemy, ally, wall = obs[..., 3] > 0, obs[..., 1] > 0, obs[..., 0] > 0
        # 1. attack the weakest adjacent enemy
        nb_y, nb_x = self.neighbours[:, 0], self.neighbours[:, 1]
        adjacent = enemy[:, nb_y, nb_x]
        hp = np.where(adjacent, obs[:, nb_y, nb_x, 4], np.inf)
        attack = len(self.moves) + hp.argmin(1)
        # 2. where to go: nearest enemy, allies' centre when outnumbered, else forward
        flat_enemy = enemy.reshape(n, -1)
        nearest = np.where(flat_enemy, self.distance, 10**6).argmin(1)
        target = self.grid[nearest].astype(float)
        flat_ally = ally.reshape(n, -1)
        n_ally, n_enemy = flat_ally.sum(1), flat_enemy.sum(1)
        centre = flat_ally @ self.grid / np.maximum(n_ally, 1)[:, None]
        outnumbered = n_enemy > n_ally
        target[outnumbered] = centre[outnumbered]
        target[n_enemy == 0] = (0, 6 * self.advance_dx)
        # 3. the free move that gets closest (staying put is always allowed)
        occupied = (enemy | ally | wall)[:, self.dest[:, 0], self.dest[:, 1]]
        occupied[:, len(self.moves) // 2] = False
        gap = np.abs(target[:, None, :] - self.moves[None]).sum(2)
        move = np.where(occupied, np.inf, gap).argmin(1)
        return np.where(adjacent.any(1), attack, move)


class MixOpponent(Opponent):
    """Samples one of its opponents per episode, with the given weights."""

    def __init__(self, opponents: list[Opponent], weights: list[float], seed: int | None = None):
        self.opponents = opponents
        w = np.asarray(weights, float)
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.current = opponents[0]

    @property
    def name(self) -> str:
        return self.current.name

    def new_episode(self):
        self.current = self.opponents[self.rng.choice(len(self.opponents), p=self.p)]
        self.current.new_episode()

    def act(self, obs, alive):
        return self.current.act(obs, alive)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state,
                "opponents": [o.state_dict() for o in self.opponents]}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        for o, st in zip(self.opponents, state["opponents"]):
            o.load_state_dict(st)


def course_file(name: str, opponents_dir: str | Path) -> Path:
    """Path of a course opponent's file, or a clear error saying where to get it."""
    path = Path(opponents_dir) / COURSE_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"opponent '{name}' needs {COURSE_FILES[name]} in opponents_dir={opponents_dir}, "
            f"which is missing: get it from {SOURCE} and set opponents_dir=FOLDER "
            f"(or use opponent=random)"
        )
    return path


def check_opponent(name: str, opponents_dir: str | Path) -> None:
    """Fail early, before any environment exists, if an opponent cannot be built."""
    if name in COURSE_FILES:
        course_file(name, opponents_dir)
    elif name not in OPPONENT_NAMES:
        raise ConfigError(f"unknown opponent '{name}' (choose from: {', '.join(OPPONENT_NAMES)})")


def make_opponent(name: str, opponents_dir: str | Path, seed: int | None = None) -> Opponent:
    """An opponent for the red team, by name."""
    check_opponent(name, opponents_dir)
    if name == "random":
        return RandomOpponent(seed)
    if name == "scripted":
        return ScriptedOpponent(advance_dx=+1)  # red starts at small x
    return NetOpponent(load_course_net(course_file(name, opponents_dir)), name)


def make_mix(weights: dict[str, float], opponents_dir, seed: int | None = None) -> Opponent:
    names = [n for n, w in weights.items() if w > 0]
    if not names:
        raise ValueError("opponent.weights: at least one weight must be positive")
    if len(names) == 1:
        return make_opponent(names[0], opponents_dir, seed)
    opponents = [make_opponent(n, opponents_dir, seed) for n in names]
    return MixOpponent(opponents, [weights[n] for n in names], seed)
