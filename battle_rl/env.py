"""The battle game as fixed-size team arrays over MAgent2's parallel API.

Every team has 81 slots (``red_0..red_80``, ``blue_0..blue_80``) that keep their index for the
whole episode; agents that died keep a zero observation and ``alive == False``. Observations
are HWC ``(N, 13, 13, 5)`` float32, as the game gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEAMS = ("red", "blue")
OBS_SHAPE = (13, 13, 5)
N_ACTIONS = 21
TEAM_SIZE = 81  # agents per team on the 45x45 map (slot ids 0..80)
CENTRE = OBS_SHAPE[0] // 2  # the agent's own cell in its view
KILL_THRESHOLD = 4.5  # the course's rule: a reward above 4.5 is a kill (kill reward is 5)

DEFAULT_REWARD = dict(
    step_reward=-0.005, dead_penalty=-0.1, attack_penalty=-0.1, attack_opponent_reward=0.2
)


def other(team: str) -> str:
    return "blue" if team == "red" else "red"


@dataclass
class Step:
    """What one cycle of the game returns, per team (arrays indexed by slot)."""

    obs: dict[str, np.ndarray]  # (N, 13, 13, 5) float32, zeros where dead
    reward: dict[str, np.ndarray]  # (N,) float32, 0 for slots that were already dead
    died: dict[str, np.ndarray]  # (N,) bool, died during this cycle
    alive: dict[str, np.ndarray]  # (N,) bool, alive after this cycle
    kills: dict[str, int]  # kills this cycle by the course rule
    actions: dict[str, np.ndarray]  # (N,) the actions the engine played (see BattleEnv.step)
    done: bool  # the episode is over (time limit or a team wiped out)
    truncated: bool  # over because of the time limit


class BattleEnv:
    """``battle_v4.parallel_env`` with team arrays in and out.

    ``reset(seed)`` returns ``{team: obs}``; ``step({team: actions})`` takes one int array of 81
    actions per team (entries of dead slots are ignored) and returns a :class:`Step`.

    The parallel env builds the game, resets it, renders it and gives the global state. A
    cycle is stepped on its engine directly (``parallel_env.env``, MAgent's GridWorld), the
    same calls ``parallel_env.step`` makes, without building per-agent dictionaries: the
    engine already hands out one array per team.

    It is magent2's game cycle for cycle, first cycle included. magent2's
    ``parallel_env.reset`` counts the teams before it places the agents, so the first
    ``step`` after every reset hands the engine zero-length action views at offset 0 of the
    action array (red's slots, then blue's), and the engine reads each team's 81 actions from
    the start of that array: red plays its own actions and **blue plays red's** (blue slot i
    does what red slot i was told). The AEC API and the course's loop run on the same code.
    Here that is done explicitly, and ``Step.actions`` says what each agent really played,
    so the replay stores the executed moves. ``corrected_first_cycle=True`` gives blue its
    own first actions instead: a different game, for training experiments only (the
    evaluator never sets it). ``tests/test_env_eval.py`` compares this class with the
    unpatched ``battle_v4.parallel_env`` and the course's AEC loop.
    """

    def __init__(
        self,
        map_size: int = 45,
        max_cycles: int = 300,
        reward: dict | None = None,
        render_mode: str | None = None,
        corrected_first_cycle: bool = False,
    ):
        from magent2.environments import battle_v4

        kwargs = dict(DEFAULT_REWARD)
        kwargs.update(reward or {})
        # battle-rl's own shaping (training only): reward for closing in on the enemy, and for
        # each hit an agent takes (a negative weight: a cost)
        self.approach = float(kwargs.pop("approach", 0.0))
        self.hurt = float(kwargs.pop("hurt", 0.0))
        self.map_size, self.max_cycles, self.reward_args = map_size, max_cycles, kwargs
        self.corrected_first_cycle = bool(corrected_first_cycle)
        self.env = battle_v4.parallel_env(
            map_size=map_size, max_cycles=max_cycles, render_mode=render_mode, **kwargs
        )
        self.engine = self.env.env
        self.handles = self.env.handles  # red, blue
        agents = self.env.possible_agents
        self.names = {t: [a for a in agents if a.startswith(t + "_")] for t in TEAMS}
        self.n_agents = len(self.names["blue"])
        self._alive = {t: np.zeros(self.n_agents, bool) for t in TEAMS}
        self.cycle = 0

    @property
    def alive(self) -> dict[str, np.ndarray]:
        return {t: a.copy() for t, a in self._alive.items()}

    def _observe(self, team_index: int) -> tuple[np.ndarray, np.ndarray]:
        """One team from the engine: the slots on the map and the (N, 13, 13, 5) observations
        by slot (zeros for slots not on the map)."""
        handle = self.handles[team_index]
        slots = self.engine.get_agent_id(handle) - team_index * self.n_agents
        view, _ = self.engine.get_observation(handle)
        obs = np.zeros((self.n_agents, *OBS_SHAPE), np.float32)
        obs[slots] = view
        return slots, obs

    def observe_placed(self) -> dict[str, np.ndarray]:
        """Observations of the agents on the map now, which all count as alive: after a reset,
        or after agents were placed on the engine by hand (tests of mirrored positions)."""
        obs = {}
        for k, t in enumerate(TEAMS):
            slots, obs[t] = self._observe(k)
            self._alive[t][:] = False
            self._alive[t][slots] = True
        return obs

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        self.env.reset(seed=seed)
        self.cycle = 0
        obs = self.observe_placed()
        if self.approach:
            self._distance = self._enemy_distance()
        self._hp = {t: obs[t][:, CENTRE, CENTRE, 2] for t in TEAMS}
        return obs

    def step(self, actions: dict[str, np.ndarray]) -> Step:
        engine = self.engine
        # magent2's first cycle: every team reads its actions from the start of the flat
        # action array (red's slots in order), so blue's agent j plays red slot j's action
        first = self.cycle == 0 and not self.corrected_first_cycle
        flat = np.concatenate([actions["red"], actions["blue"]]) if first else None
        played = {}
        for k, t in enumerate(TEAMS):
            slots = engine.get_agent_id(self.handles[k]) - k * self.n_agents
            act = (flat[:len(slots)] if first else np.asarray(actions[t])[slots]).astype(np.int32)
            engine.set_action(self.handles[k], act)
            played[t] = np.asarray(actions[t]).copy()
            played[t][slots] = act
        game_over = engine.step()
        self.cycle += 1
        obs, reward, died = {}, {}, {}
        for k, t in enumerate(TEAMS):
            handle = self.handles[k]
            slots, obs[t] = self._observe(k)
            alive_now = np.zeros(self.n_agents, bool)
            if not game_over:  # parallel_env: when the game is over, every agent is done
                alive_now[slots] = engine.get_alive(handle)
            obs[t][~alive_now] = 0.0
            reward[t] = np.zeros(self.n_agents, np.float32)
            reward[t][slots] = engine.get_reward(handle)
            died[t] = self._alive[t] & ~alive_now
            self._alive[t] = alive_now
        engine.clear_dead()
        truncated = self.cycle >= self.max_cycles
        done = truncated or not (self._alive["red"].any() or self._alive["blue"].any())
        kills = {t: int((reward[t] > KILL_THRESHOLD).sum()) for t in TEAMS}
        if self.approach:
            self._shape_approach(reward)
        if self.hurt:
            self._shape_hurt(reward, obs)
        return Step(obs=obs, reward=reward, died=died, alive=self.alive, kills=kills,
                    done=done, truncated=truncated, actions=played)

    def _enemy_distance(self) -> dict[str, np.ndarray]:
        """Each slot's distance (in moves: Chebyshev cells) to the nearest enemy on the map."""
        pos = {}
        for k, t in enumerate(TEAMS):
            slots = self.engine.get_agent_id(self.handles[k]) - k * self.n_agents
            pos[t] = (slots, np.asarray(self.engine.get_pos(self.handles[k]), np.int32))
        dist = {t: np.full(self.n_agents, np.nan) for t in TEAMS}
        for t in TEAMS:
            (slots, mine), (_, theirs) = pos[t], pos[other(t)]
            if len(slots) and len(theirs):
                gap = np.abs(mine[:, None, :] - theirs[None, :, :]).max(2)
                dist[t][slots] = gap.min(1)
        return dist

    def _shape_approach(self, reward: dict[str, np.ndarray]) -> None:
        """``approach`` x the cells an agent closed on its nearest enemy this cycle (negative
        when it backed off), for agents alive before and after. It pays for finding an enemy
        that is out of view, where the game's own rewards say nothing. Kills were counted
        before shaping, and the evaluation never shapes."""
        now = self._enemy_distance()
        before = getattr(self, "_distance", None)
        self._distance = now
        if before is None:
            return
        for t in TEAMS:
            closed = np.nan_to_num(before[t] - now[t])  # nan: not on the map at one end
            reward[t] += (self.approach * np.clip(closed, -2, 2)).astype(np.float32)

    def _shape_hurt(self, reward: dict[str, np.ndarray], obs: dict[str, np.ndarray]) -> None:
        """``hurt`` x the hits each agent alive before and after took this cycle, read off its
        own HP (the centre of its view: a hit takes 0.2 of it, a cycle gives back 0.01). With
        ``hurt`` = -``attack_opponent_reward`` a hit costs the side that takes it what it pays
        the side that lands it, as the course's rule counts kills minus losses (a death is
        ``dead_penalty``'s)."""
        for t in TEAMS:
            hp = obs[t][:, CENTRE, CENTRE, 2]
            hits = np.rint(np.maximum(self._hp[t] + 0.01 - hp, 0.0) / 0.2)
            reward[t] += (self.hurt * np.where(self._alive[t], hits, 0.0)).astype(np.float32)
            self._hp[t] = hp

    def state(self) -> np.ndarray:
        """The global state, (map_size, map_size, 5)."""
        return self.env.state()

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


def winner(blue_kills: int, red_kills: int, margin: int = 5) -> str:
    """The course's verdict for one episode: 'blue', 'red' or 'draw'."""
    if blue_kills >= red_kills + margin:
        return "blue"
    if red_kills >= blue_kills + margin:
        return "red"
    return "draw"
