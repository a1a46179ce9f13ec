"""Team policies: random, the course's networks, a scripted agent, self-play snapshots of the
learner, the shipped champion, and a per-episode mix of them.

An opponent maps a team's observations (N, 13, 13, 5) and alive mask (N,) to N actions, in
one batched call. ``new_episode()`` lets a mix choose who plays the next episode and
``end_episode(learner_kills, opponent_kills)`` tells it how that episode went.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from torch import nn

from battle_rl.config import OPPONENT_NAMES, SELF_PLAY_SAMPLING
from battle_rl.env import N_ACTIONS, OBS_SHAPE, TEAM_SIZE, winner
from battle_rl.errors import ConfigError
from battle_rl.networks import greedy_actions, load_course_net, load_policy, q_values
from battle_rl.sides import ACTION_MIRROR, ATTACKS, MOVES, Mirrored, mirror_obs_hwc

COURSE_FILES = {"pretrained": "red.pt", "final": "red_final.pt"}
SOURCE = "https://github.com/giangbang/RL-final-project-AIT-3007"
# the shipped champion (TorchScript, trained as blue); scripts/train_champion.py makes it
CHAMPION_PATH = Path(__file__).resolve().parent / "assets" / "champion.pt"
_MIRROR = np.array(ACTION_MIRROR)


class Opponent:
    name = "opponent"
    # True: act() depends on the observations only, so one call may serve many games at once
    stateless = False

    def act(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act_rows(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Actions of live agents only: ``obs`` holds just their rows, ``slots`` their slot
        indices (the batched evaluator gathers the live agents of many games this way). Only
        for ``stateless`` policies, whose action for an agent depends on its row alone."""
        return self.act(obs, np.ones(len(obs), bool))

    def new_episode(self) -> None:
        """Called before each episode."""

    def end_episode(self, learner_kills: int, opponent_kills: int) -> None:
        """Called after each training episode with the learner's and this team's kills."""

    def for_game(self, seed: int) -> "Opponent":
        """The instance that plays one evaluation game (its own random stream, so results do
        not depend on which games run side by side)."""
        return self

    def reseed(self, seed: int) -> None:
        """A new random stream (each DDP rank its own, see ``battle_rl.distributed``)."""

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

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class NetOpponent(Opponent):
    """Greedy actions of a Q-network (one forward for the whole team). The network is used
    as given (pass it in eval mode): the evaluator wraps the learner's own network."""

    stateless = True

    def __init__(self, net: nn.Module, name: str):
        self.net, self.name = net, name

    def act(self, obs, alive):
        # observations come in whole teams (one block of TEAM_SIZE slots per game): the slot
        # index is the agent id for networks with an agent-id embedding (VDN/QMIX)
        return greedy_actions(self.net, obs, alive, np.arange(len(obs)) % TEAM_SIZE)

    def act_rows(self, obs, slots):
        return q_values(self.net, obs, slots).argmax(1).cpu().numpy()


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


class MirroredOpponent(Opponent):
    """Any opponent seen through the left-right mirror, so that it plays the other team.
    (For a network, ``NetOpponent(sides.Mirrored(net))`` does the same in one forward.)"""

    def __init__(self, inner: Opponent):
        self.inner, self.name, self.stateless = inner, inner.name, inner.stateless

    def act(self, obs, alive):
        return _MIRROR[self.inner.act(np.ascontiguousarray(mirror_obs_hwc(obs)), alive)]

    def act_rows(self, obs, slots):
        return _MIRROR[self.inner.act_rows(np.ascontiguousarray(mirror_obs_hwc(obs)), slots)]

    def new_episode(self):
        self.inner.new_episode()

    def end_episode(self, learner_kills, opponent_kills):
        self.inner.end_episode(learner_kills, opponent_kills)

    def for_game(self, seed):
        return MirroredOpponent(self.inner.for_game(seed))

    def reseed(self, seed):
        self.inner.reseed(seed)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


class Snapshot:
    """A frozen copy of the learner's network, mirrored to play red, and how the learner has
    fared against it (score: 1 per win, 1/2 per draw)."""

    def __init__(self, net: nn.Module, step: int, score: float = 0.0, games: int = 0):
        self.net, self.step, self.score, self.games = net, step, score, games


class SelfPlayPool(Opponent):
    """Self-play: red plays frozen snapshots of the learner, one drawn per episode.

    ``bind(net)`` gives the pool the learner's policy network (a reference);
    ``snapshot(step)`` (called every K updates by ``callbacks.SelfPlaySnapshots``) adds a
    deep copy of it, frozen, on the CPU, seen through ``sides.Mirrored`` since the learner is
    trained as blue. The pool keeps the last ``pool_size``. ``sampling``:
    - ``latest``: the newest snapshot;
    - ``uniform``: any snapshot, equally likely;
    - ``win_rate``: the snapshots the learner beats least, most often: weight ``(1 - s)^2``
      with ``s`` the learner's mean score against it (one draw assumed before any game).
    Until the first snapshot the pool plays random actions.
    """

    name = "self_play"

    def __init__(self, sampling: str = "latest", pool_size: int = 20, seed: int | None = None):
        if sampling not in SELF_PLAY_SAMPLING:
            raise ConfigError(f"self_play.sampling={sampling!r} is not allowed: one of "
                              f"{', '.join(SELF_PLAY_SAMPLING)}")
        self.sampling, self.pool_size = sampling, int(pool_size)
        self.rng = np.random.default_rng(seed)
        self.random = RandomOpponent(seed)
        self.learner: nn.Module | None = None
        self.snapshots: list[Snapshot] = []
        self.current: Snapshot | None = None

    def bind(self, net: nn.Module) -> "SelfPlayPool":
        self.learner = net
        return self

    def _frozen_copy(self) -> nn.Module:
        if self.learner is None:
            raise RuntimeError("SelfPlayPool.bind(net) must be called before snapshots")
        net = copy.deepcopy(self.learner).cpu().eval().requires_grad_(False)
        return Mirrored(net).eval()

    def snapshot(self, step: int = 0) -> Snapshot:
        snap = Snapshot(self._frozen_copy(), step)
        self.snapshots = (self.snapshots + [snap])[-self.pool_size:]
        return snap

    def probabilities(self) -> np.ndarray:
        n = len(self.snapshots)
        if self.sampling == "latest":
            return np.eye(n)[-1]
        if self.sampling == "uniform":
            return np.full(n, 1.0 / n)
        s = np.array([(x.score + 0.5) / (x.games + 1) for x in self.snapshots])
        w = (1.0 - s) ** 2 + 1e-6
        return w / w.sum()

    def new_episode(self):
        if not self.snapshots:
            self.current = None
            return
        self.current = self.snapshots[self.rng.choice(len(self.snapshots),
                                                      p=self.probabilities())]

    def end_episode(self, learner_kills, opponent_kills):
        if self.current is not None:
            verdict = winner(learner_kills, opponent_kills)  # the learner in blue's seat
            self.current.score += {"blue": 1.0, "draw": 0.5, "red": 0.0}[verdict]
            self.current.games += 1

    def act(self, obs, alive):
        if self.current is None:
            return self.random.act(obs, alive)
        return greedy_actions(self.current.net, obs, alive)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)
        self.random.reseed(seed)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "random": self.random.state_dict(),
                "snapshots": [{"weights": s.net.net.state_dict(), "step": s.step,
                               "score": s.score, "games": s.games} for s in self.snapshots]}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.random.load_state_dict(state["random"])
        self.snapshots = []
        for s in state["snapshots"]:
            net = self._frozen_copy()
            net.net.load_state_dict(s["weights"])
            self.snapshots.append(Snapshot(net, s["step"], s["score"], s["games"]))
        self.current = None


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

    def end_episode(self, learner_kills, opponent_kills):
        self.current.end_episode(learner_kills, opponent_kills)

    def act(self, obs, alive):
        return self.current.act(obs, alive)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)
        for o in self.opponents:
            o.reseed(seed)

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


def champion_file() -> Path:
    """The shipped champion, or a clear error saying how to make it."""
    if not CHAMPION_PATH.is_file():
        raise FileNotFoundError(
            f"opponent 'champion' needs {CHAMPION_PATH}, which is missing: train it with "
            f"`python scripts/train_champion.py --install` (see the README's League section)"
        )
    return CHAMPION_PATH


def check_opponent(name: str, opponents_dir: str | Path, policies: dict | None = None) -> None:
    """Fail early, before any environment exists, if an opponent cannot be built.

    ``policies``: named policy files (``policies.NAME=PATH`` in the configuration), opponents
    beside the built-in ones."""
    if policies and name in policies:
        if not Path(policies[name]).is_file():
            raise FileNotFoundError(f"policies.{name}: {policies[name]} not found")
    elif name in COURSE_FILES:
        course_file(name, opponents_dir)
    elif name == "champion":
        champion_file()
    elif name not in OPPONENT_NAMES:
        raise ConfigError(f"unknown opponent '{name}' (choose from: {', '.join(OPPONENT_NAMES)})")


def make_opponent(name: str, opponents_dir: str | Path, seed: int | None = None,
                  self_play: dict | None = None, policies: dict | None = None) -> Opponent:
    """An opponent for the red team, by name (``self_play``: the pool's settings;
    ``policies``: named policy files, battle-rl policies trained as blue)."""
    check_opponent(name, opponents_dir, policies)
    if policies and name in policies:  # trained as blue: plays red through the mirror
        return NetOpponent(Mirrored(load_policy(policies[name])).eval(), name)
    if name == "random":
        return RandomOpponent(seed)
    if name == "scripted":
        return ScriptedOpponent(advance_dx=+1)  # red starts at small x
    if name == "self_play":
        return SelfPlayPool(seed=seed, **(self_play or {}))
    if name == "champion":  # trained as blue: plays red through the mirror
        return NetOpponent(Mirrored(load_policy(champion_file())).eval(), name)
    return NetOpponent(load_course_net(course_file(name, opponents_dir)), name)


def make_mix(weights: dict[str, float], opponents_dir, seed: int | None = None,
             self_play: dict | None = None, policies: dict | None = None) -> Opponent:
    names = [n for n, w in weights.items() if w > 0]
    if not names:
        raise ValueError("opponent.weights: at least one weight must be positive")
    opponents = [make_opponent(n, opponents_dir, seed, self_play, policies) for n in names]
    if len(names) == 1:
        return opponents[0]
    return MixOpponent(opponents, [weights[n] for n in names], seed)


def find_pool(opponent: Opponent) -> SelfPlayPool | None:
    """The self-play pool inside an opponent (itself or a member of a mix), if any."""
    members = opponent.opponents if isinstance(opponent, MixOpponent) else [opponent]
    return next((o for o in members if isinstance(o, SelfPlayPool)), None)
