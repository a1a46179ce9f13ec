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
    done: bool  # the episode is over (time limit or a team wiped out)
    truncated: bool  # over because of the time limit


class BattleEnv:
    """``battle_v4.parallel_env`` with team arrays in and out.

    ``reset(seed)`` returns ``{team: obs}``; ``step({team: actions})`` takes one int array of 81
    actions per team (entries of dead slots are ignored) and returns a :class:`Step`.
    """

    def __init__(
        self,
        map_size: int = 45,
        max_cycles: int = 300,
        reward: dict | None = None,
        render_mode: str | None = None,
    ):
        from magent2.environments import battle_v4

        kwargs = dict(DEFAULT_REWARD)
        kwargs.update(reward or {})
        self.map_size, self.max_cycles, self.reward_args = map_size, max_cycles, kwargs
        self.env = battle_v4.parallel_env(
            map_size=map_size, max_cycles=max_cycles, render_mode=render_mode, **kwargs
        )
        agents = self.env.possible_agents
        self.names = {t: [a for a in agents if a.startswith(t + "_")] for t in TEAMS}
        self.n_agents = len(self.names["blue"])
        # one flat index over both teams: red slots first, then blue
        self.all_names = self.names["red"] + self.names["blue"]
        self.index = {a: i for i, a in enumerate(self.all_names)}
        self._alive = np.zeros(2 * self.n_agents, bool)
        self.cycle = 0

    def _split(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = self.n_agents
        return {"red": x[:n], "blue": x[n:]}

    def _gather(self, obs: dict, rewards: dict | None = None):
        """Dicts keyed by agent name -> team arrays, in one vectorised copy."""
        idx = np.fromiter((self.index[a] for a in obs), np.int64, len(obs))
        all_obs = np.zeros((2 * self.n_agents, *OBS_SHAPE), np.float32)
        all_rew = np.zeros(2 * self.n_agents, np.float32)
        if len(idx):
            all_obs[idx] = np.stack(list(obs.values()))
            if rewards is not None:
                all_rew[idx] = np.fromiter((rewards[a] for a in obs), np.float32, len(obs))
        return all_obs, all_rew

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=seed)
        self.cycle = 0
        self._alive[:] = False
        self._alive[[self.index[a] for a in self.env.agents]] = True
        return self._split(self._gather(obs)[0])

    @property
    def alive(self) -> dict[str, np.ndarray]:
        return self._split(self._alive.copy())

    def step(self, actions: dict[str, np.ndarray]) -> Step:
        flat = np.concatenate([np.asarray(actions[t]).reshape(-1) for t in TEAMS])
        live = np.flatnonzero(self._alive)
        act = dict(zip((self.all_names[i] for i in live), flat[live].tolist()))
        obs, rewards, term, trunc, _ = self.env.step(act)
        self.cycle += 1
        all_obs, all_rew = self._gather(obs, rewards)
        died = np.zeros(2 * self.n_agents, bool)
        died[[self.index[a] for a, t in term.items() if t]] = True
        self._alive &= ~died
        all_obs[~self._alive] = 0.0
        kills = {t: int((r > KILL_THRESHOLD).sum()) for t, r in self._split(all_rew).items()}
        truncated = any(trunc.values())
        return Step(
            obs=self._split(all_obs),
            reward=self._split(all_rew),
            died=self._split(died),
            alive=self._split(self._alive.copy()),
            kills=kills,
            done=truncated or not self.env.agents,
            truncated=truncated,
        )

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
