"""Team policies: random, the course's networks, a scripted agent, a passive team that avoids
battle, self-play snapshots of the learner, the shipped champion, and a per-episode mix of them.

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
from battle_rl.league.sides import ACTION_MIRROR, ATTACKS, MOVES, Mirrored, mirror_obs_hwc
from battle_rl.mean_field import mean_action, rows_mean_action
from battle_rl.networks import greedy_actions, load_course_net, load_policy, q_values

COURSE_FILES = {"pretrained": "red.pt", "final": "red_final.pt"}
SOURCE = "https://github.com/giangbang/RL-final-project-AIT-3007"
# the shipped champion (TorchScript, trained as blue), made by `python train.py +experiment=champion`
CHAMPION_PATH = Path(__file__).resolve().parent.parent / "assets" / "champion.pt"
_MIRROR = np.array(ACTION_MIRROR)


class Opponent:
    name = "opponent"
    # True: act() depends on the observations only, so one call may serve many games at once
    stateless = False
    # True: act_rows() also wants each row's mean action (MF-Q networks), which the batched
    # evaluator computes from the previous cycle's actions of each game's team
    uses_mean_action = False

    def act(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act_rows(self, obs: np.ndarray, slots: np.ndarray,
                 mean_action: np.ndarray | None = None) -> np.ndarray:
        """Actions of live agents only: ``obs`` holds just their rows, ``slots`` their slot
        indices (the batched evaluator gathers the live agents of many games this way). Only
        for ``stateless`` policies, whose action for an agent depends on its row alone (and,
        with ``uses_mean_action``, on its row of ``mean_action`` (N, 21))."""
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
    as given (pass it in eval mode): the evaluator wraps the learner's own network.

    An MF-Q network (``uses_mean_action``) gets the mean action of the team's previous
    cycle: ``act`` (one game, a team per call: training rollouts, videos) remembers its own
    last actions until ``new_episode``; the batched evaluator hands it to ``act_rows``."""

    stateless = True

    def __init__(self, net: nn.Module, name: str):
        self.net, self.name = net, name
        self.uses_mean_action = bool(getattr(net, "uses_mean_action", False))
        self.last_mean = None  # the team's mean action at the previous cycle (MF-Q)

    def new_episode(self):
        self.last_mean = None

    def act(self, obs, alive):
        # observations come in whole teams (one block of TEAM_SIZE slots per game): the slot
        # index is the agent id for networks with an agent-id embedding (VDN/QMIX)
        mean = rows_mean_action(self.last_mean, len(obs)) if self.uses_mean_action else None
        actions = greedy_actions(self.net, obs, alive, np.arange(len(obs)) % TEAM_SIZE, mean)
        if self.uses_mean_action:
            self.last_mean = mean_action(actions, alive)
        return actions

    def act_rows(self, obs, slots, mean_action=None):
        return q_values(self.net, obs, slots, mean_action).argmax(1).cpu().numpy()


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


class PassiveOpponent(Opponent):
    """A team that avoids battle (batched in numpy, deterministic, no network).

    Each agent retreats toward its own edge (``home_dx``: -1 for red, which starts at small
    x; +1 for blue), then holds still: it attacks only an enemy that comes next to it (the
    weakest adjacent one), and with ``attack=False`` (``passive_strict``) never attacks at all.
    An agent that sees a horizontal wall slides toward it, into that corner; one that sees none
    only leans away from the centre of the allies in view (by slot parity without allies) and
    never moves purely up or down, so it cannot swing to and fro as its view changes. Moves
    into occupied cells are avoided, and staying wins ties: the team lines its edge and fills
    its corners, then holds.

    Under the course's rule a draw against it is not a win: a team must find it in its
    corners and kill 5 more than it loses within the episode.
    """

    stateless = True

    def __init__(self, home_dx: int = -1, attack: bool = True):
        self.home_dx, self.attack = home_dx, attack
        self.name = "passive" if attack else "passive_strict"
        c = OBS_SHAPE[0] // 2
        self.neighbours = np.array([(c + dy, c + dx) for dy, dx in ATTACKS])
        self.moves = np.array(MOVES)  # (13, 2) as (dy, dx)
        self.dest = self.moves + c
        self.stay = MOVES.index((0, 0))
        self.long = np.array([k for k, (dy, dx) in enumerate(MOVES) if 2 in (abs(dy), abs(dx))])
        self.via = self.moves[self.long] // 2 + c  # the cell a straight two-cell move passes
        self.rows = np.arange(OBS_SHAPE[0]) - c  # dy of each row of the view

    def act(self, obs, alive):
        return self.act_rows(obs, np.arange(len(obs)))

    def act_rows(self, obs, slots, mean_action=None):
        enemy, ally, wall = obs[..., 3] > 0, obs[..., 1] > 0, obs[..., 0] > 0
        # which corner: a wall in view above or below, else the side of the visible allies
        wall_rows = wall.sum(2) > OBS_SHAPE[1] // 2  # (n, 13): a horizontal wall in that row
        up = wall_rows[:, : len(self.rows) // 2].any(1)
        down = wall_rows[:, len(self.rows) // 2 + 1:].any(1)
        ally_dy = (ally.sum(2) * self.rows).sum(1) / np.maximum(ally.sum((1, 2)), 1)
        dy = np.where(ally_dy > 0, -1, np.where(ally_dy < 0, 1, np.where(slots % 2 == 0, -1, 1)))
        corner = up ^ down  # a horizontal wall in view: slide toward it, into the corner
        dy = np.where(corner, np.where(up, -1, 1), dy)
        # without one, only a lean: a purely vertical move never beats staying put (so an agent
        # cannot swing to and fro as the allies in its view change)
        target = np.stack([np.where(corner, 6.0, 0.5) * dy,
                           np.full(len(obs), 6.0 * self.home_dx)], 1)
        blocked = enemy | ally | wall
        occupied = blocked[:, self.dest[:, 0], self.dest[:, 1]]
        # a straight two-cell move also needs the cell it passes (the view shows the map's
        # border as one wall cell, and the void beyond it as empty)
        occupied[:, self.long] |= blocked[:, self.via[:, 0], self.via[:, 1]]
        occupied[:, self.stay] = False
        gap = np.abs(target[:, None, :] - self.moves[None]).sum(2)
        gap[:, np.arange(len(MOVES)) != self.stay] += 0.5  # a move must gain a whole cell
        move = np.where(occupied, np.inf, gap).argmin(1)
        if not self.attack:
            return move
        nb_y, nb_x = self.neighbours[:, 0], self.neighbours[:, 1]
        adjacent = enemy[:, nb_y, nb_x]
        hp = np.where(adjacent, obs[:, nb_y, nb_x, 4], np.inf)
        return np.where(adjacent.any(1), len(MOVES) + hp.argmin(1), move)


class MirroredOpponent(Opponent):
    """Any opponent seen through the left-right mirror, so that it plays the other team.
    (For a network, ``NetOpponent(sides.Mirrored(net))`` does the same in one forward.)"""

    def __init__(self, inner: Opponent):
        self.inner, self.name, self.stateless = inner, inner.name, inner.stateless
        self.uses_mean_action = inner.uses_mean_action

    def act(self, obs, alive):
        return _MIRROR[self.inner.act(np.ascontiguousarray(mirror_obs_hwc(obs)), alive)]

    def act_rows(self, obs, slots, mean_action=None):
        mirrored = None if mean_action is None else mean_action[:, _MIRROR]
        return _MIRROR[self.inner.act_rows(np.ascontiguousarray(mirror_obs_hwc(obs)), slots,
                                           mirrored)]

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
        self.last_mean = None  # red's mean action at the previous cycle (MF-Q snapshots)

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
        self.last_mean = None
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
        if not self.current.net.uses_mean_action:
            return greedy_actions(self.current.net, obs, alive)
        actions = greedy_actions(self.current.net, obs, alive,
                                 mean_action=rows_mean_action(self.last_mean, len(obs)))
        self.last_mean = mean_action(actions, alive)
        return actions

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


# what ships with battle-rl: opponents a default list falls back to when nothing else is left
SHIPPED = ("random", "scripted", "champion")


def named_on_command_line(overrides: list[str]) -> set[str]:
    """The opponents a command line names itself (``opponent=final``,
    ``opponent.weights.final=1``, ``eval.opponents=[final]``, evaluate.py's
    ``opponents=[final]``), as opposed to those that come from the configuration's defaults."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    names: set[str] = set()
    for o in OverridesParser.create().parse_overrides(overrides):
        key, value = o.key_or_group, o.value()
        if o.is_delete() or o.is_sweep_override():
            continue
        if key == "opponent" and isinstance(value, str):
            names.add(value)
        elif key.startswith("opponent.weights."):
            names.add(key.rsplit(".", 1)[1])
        elif key == "opponent.weights" and isinstance(value, dict):
            names.update(value)
        elif key in ("eval.opponents", "opponents") and isinstance(value, list):
            names.update(map(str, value))
    return names


def command_line_opponents() -> set[str] | None:
    """The opponents this run's command line names; None outside a Hydra job (then every
    opponent counts as named: a missing course file is an error)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return named_on_command_line(list(HydraConfig.get().overrides.task))
    except ValueError:
        return None


def leave_out_missing(names: list[str], opponents_dir: str | Path, named: set[str] | None
                      ) -> tuple[list[str], list[str]]:
    """(kept, left out): the course opponents among ``names`` whose files are missing are
    left out, unless the command line named them (``named``; None: all are named, nothing is
    left out and a missing file stays an error)."""
    if named is None:
        return list(names), []
    out = [n for n in names if n in COURSE_FILES and n not in named
           and not (Path(opponents_dir) / COURSE_FILES[n]).is_file()]
    return [n for n in names if n not in out], out


def left_out_notice(left_out: list[str], opponents_dir: str | Path,
                    setting: str = "opponents_dir=FOLDER (or BATTLE_RL_OPPONENTS_DIR)") -> str:
    """The note that says which course opponents were left out and how to get them."""
    files = ", ".join(f"{n} ({COURSE_FILES[n]})" for n in left_out)
    return (f"note: left out the course opponents {files}, not found in {opponents_dir}: "
            f"get them from {SOURCE} and set {setting}")


def write_opponents_record(path: str | Path, played: dict, left_out: list[str],
                           opponents_dir: str | Path) -> Path:
    """``opponents.json`` beside ``eval.json``: who was played (``played``: e.g. the training
    weights and the evaluation's opponents) and which course opponents were left out, why."""
    import json

    path = Path(path)
    path.write_text(json.dumps({**played, "left_out": {
        n: f"{Path(opponents_dir) / COURSE_FILES[n]} not found" for n in left_out}}, indent=1))
    return path


def champion_file() -> Path:
    """The shipped champion, or a clear error saying how to make it."""
    if not CHAMPION_PATH.is_file():
        raise FileNotFoundError(
            f"opponent 'champion' needs {CHAMPION_PATH}, which is missing: train one with "
            f"`python train.py +experiment=champion` and copy its policy.pt there "
            f"(docs/league.md, The champion)"
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
    if name in ("passive", "passive_strict"):  # red's own edge is at small x
        return PassiveOpponent(home_dx=-1, attack=name == "passive")
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
