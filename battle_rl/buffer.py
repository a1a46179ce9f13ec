"""Replay storage: one numpy ring of per-agent rows, each observation stored once.

A row holds an agent's observation at one cycle (uint8, quantised: observations are 0/1 flags
and HP fractions in steps of 0.01) and, once the cycle is played, its action, reward, done flag
and the row of its next observation. A transition is (row, next row): the next observation is
the next row's observation, so nothing is stored twice. Rows that hold an episode's final
observation have no action and are never sampled. FIFO: a row's next row is always newer, so
overwriting the oldest row never leaves a sampled transition with a stale next observation.
"""

from __future__ import annotations

import numpy as np

from battle_rl.env import N_ACTIONS, OBS_SHAPE
from battle_rl.mean_field import mean_action

OBS_SCALE = 100.0  # stored = round(obs * 100); HP fractions are multiples of 0.01


def quantize(obs: np.ndarray) -> np.ndarray:
    return np.rint(obs * OBS_SCALE).astype(np.uint8)


class _Persistent:
    """Resume support shared by the replay rings: the used rows of ``ARRAYS`` and the
    pointers, as plain arrays (``np.savez`` writes them; the RNG is saved with the dataset)."""

    ARRAYS: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, np.ndarray]:
        n = self.size
        state = {k: getattr(self, k)[:n] for k in self.ARRAYS}
        state.update(current=np.asarray(self.current), ptr=np.int64(self.ptr),
                     size=np.int64(n), capacity=np.int64(self.capacity))
        return state

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved replay buffer has capacity {int(state['capacity'])}, "
                             f"this run's hparams.buffer_size is {self.capacity}")
        n = int(state["size"])
        for k in self.ARRAYS:
            getattr(self, k)[:n] = state[k]
            getattr(self, k)[n:] = 0
        if isinstance(self.current, np.ndarray):  # per agent: each slot's row
            self.current[:] = state["current"]
        else:  # per team step: one row
            self.current = int(state["current"])
        self.ptr, self.size = int(state["ptr"]), n


class ReplayBuffer(_Persistent):
    """Per-agent transitions; ``n_step`` > 1 samples n-step returns (see :meth:`sample`)."""

    def __init__(self, capacity: int, n_agents: int = 81, seed: int | None = None,
                 n_step: int = 1, gamma: float = 0.9, channels=None, valid_actions=None):
        if capacity < 2 * n_agents + 1:
            raise ValueError(f"buffer capacity {capacity} must be at least {2 * n_agents + 1}")
        self.capacity, self.n_agents = capacity, n_agents
        self.n_step, self.gamma = int(n_step), float(gamma)
        # done once per row at insertion, not at every sampling of it: with ``channels``, keep
        # the observation as the learner's network reads it (those channels, channels first:
        # (C, 13, 13)), and with ``valid_actions`` (uint8 HWC observations -> (N, 21) bool) the
        # actions its mask allows, which may need channels the network does not read
        self.channels_first = channels is not None
        self.channels = list(range(OBS_SHAPE[2])) if channels is None else list(channels)
        self.valid_actions = valid_actions
        self.obs = np.zeros((capacity, *self.obs_shape), np.uint8)
        self.valid = None
        if valid_actions is not None:
            self.valid = np.zeros((capacity, N_ACTIONS), bool)
            self.ARRAYS = self.ARRAYS + ("valid",)
        self.action = np.zeros(capacity, np.uint8)
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, bool)
        self.next = np.zeros(capacity, np.int32)
        self.ready = np.zeros(capacity, bool)  # a full transition that may be sampled
        self.ptr = 0  # next row to write
        self.size = 0  # rows in use
        self.rng = np.random.default_rng(seed)
        self.current = np.full(n_agents, -1, np.int64)  # each slot's row for this cycle

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return int(self.ready[: self.size].sum())

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """A stored observation's shape: (13, 13, 5), or (len(channels), 13, 13)."""
        return (len(self.channels), *OBS_SHAPE[:2]) if self.channels_first else OBS_SHAPE

    @property
    def y_axis(self) -> int:
        """The y axis of a batch of stored observations (for ``flip_y_rows``)."""
        return 2 if self.channels_first else 1

    def stored_obs(self, obs_u8: np.ndarray) -> np.ndarray:
        """Whole uint8 HWC observations (N, 13, 13, 5) as this buffer stores them."""
        return obs_u8[..., self.channels].transpose(0, 3, 1, 2) if self.channels_first \
            else obs_u8

    @property
    def bytes_per_row(self) -> int:
        arrays = (self.obs, self.action, self.reward, self.done, self.next, self.ready)
        if self.valid is not None:
            arrays += (self.valid,)
        return sum(a.nbytes for a in arrays) // self.capacity

    def _write_obs(self, obs: np.ndarray) -> np.ndarray:
        rows = (self.ptr + np.arange(len(obs))) % self.capacity
        whole = quantize(obs)
        if self.valid is not None:
            self.valid[rows] = self.valid_actions(whole)
        self.obs[rows] = self.stored_obs(whole)
        self.ready[rows] = False
        self.ptr = int((self.ptr + len(obs)) % self.capacity)
        self.size = min(self.size + len(obs), self.capacity)
        return rows

    def start_episode(self, obs: np.ndarray, alive: np.ndarray) -> None:
        """Store the first observations of the agents alive at the start of an episode."""
        self.current[:] = -1
        self.current[alive] = self._write_obs(obs[alive])

    def add(
        self,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        died: np.ndarray,
        alive_next: np.ndarray,
    ) -> None:
        """Record one cycle for the team: arrays indexed by slot (N,).

        Slots that acted are those with a current row. ``died`` ends their transition (no
        bootstrap); the others get a row for ``next_obs`` that becomes their current row.
        A time-limit end is *not* a death: those transitions bootstrap from the final row.
        """
        acted = self.current >= 0
        rows = self.current[acted]
        self.action[rows] = action[acted]
        self.reward[rows] = reward[acted]
        self.done[rows] = died[acted]
        going_on = acted & alive_next & ~died
        new_rows = self._write_obs(next_obs[going_on])
        self.next[self.current[going_on]] = new_rows
        ended = acted & ~going_on
        self.next[self.current[ended]] = self.current[ended]  # never read: done masks it
        self.ready[rows] = True
        self.current[:] = -1
        self.current[going_on] = new_rows

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = np.empty(0, np.int64)
        while len(idx) < batch_size:  # rejection: almost every row is ready
            draw = self.rng.integers(0, self.size, 2 * batch_size)
            idx = np.concatenate([idx, draw[self.ready[draw]]])
        return self.batch(idx[:batch_size])

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions of rows ``idx``, with ``n_step`` returns: each agent's next rows
        are followed while its episode goes on and they were played (a death, the time limit
        or the cycle being played now ends the sum early)."""
        reward, done, last = self.reward[idx].copy(), self.done[idx].copy(), idx
        discount = np.full(len(idx), self.gamma, np.float32)
        for _ in range(self.n_step - 1):
            nxt = self.next[last]
            more = ~done & self.ready[nxt]
            reward = np.where(more, reward + discount * self.reward[nxt], reward)
            done = np.where(more, self.done[nxt], done)
            last = np.where(more, nxt, last)
            discount = np.where(more, discount * self.gamma, discount)
        bootstrap = self.next[last]  # the row whose value the target takes
        return {
            "obs": self.obs[idx],
            "action": self.action[idx].astype(np.int64),
            "reward": reward.astype(np.float32),
            "next_obs": self.obs[bootstrap],
            "done": done,
            "discount": discount,  # gamma^k: the bootstrap's weight after k summed rewards
            **({} if self.valid is None else {"valid": self.valid[idx],
                                               "next_valid": self.valid[bootstrap]}),
            **self.extra(idx, bootstrap),
        }

    def extra(self, idx: np.ndarray, bootstrap: np.ndarray) -> dict[str, np.ndarray]:
        """What a subclass stores beside the transition, for rows ``idx`` and the rows their
        targets bootstrap from."""
        return {}

    # the arrays saved for resume (see _Persistent; and "valid" where the buffer has a mask)
    ARRAYS = ("obs", "action", "reward", "done", "next", "ready")

    def load_state_dict(self, state: dict) -> None:
        """Also loads a replay saved with whole observations and no masks (by battle-rl
        before 2026-12-06, or by a run whose network read every channel): the channels and the
        masks this buffer keeps are taken from them."""
        obs = state["obs"]
        if obs.shape[1:] != self.obs_shape or (self.valid is not None and "valid" not in state):
            if obs.shape[1:] != OBS_SHAPE:
                raise ValueError(f"the saved replay buffer holds observations shaped "
                                 f"{obs.shape[1:]}, this run stores {self.obs_shape} (channels "
                                 f"{self.channels}): resume with checkpoint_buffer=false to "
                                 f"start from an empty replay buffer")
            state = dict(state, obs=self.stored_obs(obs))
            if self.valid is not None:
                state["valid"] = self.valid_actions(obs)
        super().load_state_dict(state)


class MeanActionReplayBuffer(ReplayBuffer):
    """:class:`ReplayBuffer` rows that also hold the mean action an agent saw when it acted
    (MF-Q): the mean one-hot action (21,) of its team's agents that acted at the previous
    cycle, zeros at an episode's first cycle. The rows of slots ``k * team_size`` to
    ``(k + 1) * team_size - 1`` form team ``k`` (two teams with ``both_teams``).

    A batch has ``mean_action`` (the row's) and ``next_mean_action`` (that of the row the target
    bootstraps from: with one-step returns the next row's, the mean of the actions played at
    the transition's own cycle).
    """

    def __init__(self, capacity: int, n_agents: int = 81, team_size: int = 81,
                 seed: int | None = None, n_step: int = 1, gamma: float = 0.9):
        if n_agents % team_size:
            raise ValueError(f"{n_agents} slots are not whole teams of {team_size}")
        super().__init__(capacity, n_agents, seed, n_step, gamma)
        self.mean_action = np.zeros((capacity, N_ACTIONS), np.float32)
        self.teams = [slice(k, k + team_size) for k in range(0, n_agents, team_size)]

    @property
    def bytes_per_row(self) -> int:
        return super().bytes_per_row + self.mean_action.nbytes // self.capacity

    def start_episode(self, obs: np.ndarray, alive: np.ndarray) -> None:
        super().start_episode(obs, alive)
        self.mean_action[self.current[self.current >= 0]] = 0.0  # nobody acted before

    def add(self, action, reward, next_obs, died, alive_next) -> None:
        acted = self.current >= 0
        means = [mean_action(action[t], acted[t]) for t in self.teams]
        super().add(action, reward, next_obs, died, alive_next)
        for t, mean in zip(self.teams, means):  # the new rows: this cycle's mean action
            rows = self.current[t]
            self.mean_action[rows[rows >= 0]] = mean

    def extra(self, idx: np.ndarray, bootstrap: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean_action": self.mean_action[idx],
                "next_mean_action": self.mean_action[bootstrap]}

    ARRAYS = ReplayBuffer.ARRAYS + ("mean_action",)


class TeamReplayBuffer(_Persistent):
    """Replay of whole team steps, for value factorisation (VDN, QMIX).

    A row holds one cycle of the team: the global state (uint8, quantised like observations),
    the 81 slots' observations (zeros where dead), the alive mask and, once the cycle is
    played, the joint action, the team reward, the terminal flag and the row of the next team
    step. As in :class:`ReplayBuffer`, every row is stored once and a transition is (row, next
    row); rows holding an episode's final step are never sampled, and FIFO overwriting never
    leaves a sampled row with a stale next row.

    It has :class:`ReplayBuffer`'s interface (``start_episode``, ``add``, ``sample``), so the
    rollout loop is the same; the global state comes from ``state_fn``, called at the moment
    the observations are handed in (right after ``reset`` and right after each ``step``).

    Team reward: the sum of the rewards of the agents that acted (``team_reward="sum"``,
    agents' values keep the per-agent scale of DDQN under VDN), or that sum divided by the
    team size (``"mean"``). Each agent's own reward is kept too (``agent_reward``, zero for
    slots that did not act), for the learners' optional per-agent TD loss. Terminal: no agent
    of the team is alive afterwards (all dead, or the game ended by a wipe-out, which MAgent2
    reports as every agent terminating); reaching the time limit is not terminal and
    bootstraps from the final row.
    """

    def __init__(self, capacity: int, n_agents: int = 81, state_shape=(45, 45, 5),
                 state_fn=None, team_reward: str = "sum", seed: int | None = None):
        if capacity < 3:
            raise ValueError(f"team buffer capacity {capacity} must be at least 3")
        if team_reward not in ("sum", "mean"):
            raise ValueError(f"team_reward={team_reward!r}: one of 'sum', 'mean'")
        self.capacity, self.n_agents = capacity, n_agents
        self.state_fn, self.team_reward = state_fn, team_reward
        self.obs = np.zeros((capacity, n_agents, *OBS_SHAPE), np.uint8)
        self.state = np.zeros((capacity, *state_shape), np.uint8)
        self.alive = np.zeros((capacity, n_agents), bool)
        self.action = np.zeros((capacity, n_agents), np.uint8)
        self.reward = np.zeros(capacity, np.float32)
        self.agent_reward = np.zeros((capacity, n_agents), np.float32)
        self.done = np.zeros(capacity, bool)
        self.next = np.zeros(capacity, np.int32)
        self.ready = np.zeros(capacity, bool)
        self.ptr = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self.current = -1  # the row of this cycle's team step (-1: none)

    def __len__(self) -> int:
        return int(self.ready[: self.size].sum())

    @property
    def bytes_per_row(self) -> int:
        arrays = (self.obs, self.state, self.alive, self.action, self.reward,
                  self.agent_reward, self.done, self.next, self.ready)
        return sum(a.nbytes for a in arrays) // self.capacity

    def _write(self, obs: np.ndarray, alive: np.ndarray, state: np.ndarray | None) -> int:
        row = self.ptr
        self.obs[row] = quantize(obs)
        self.alive[row] = alive
        if state is not None:
            self.state[row] = quantize(state)
        self.ready[row] = False
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return row

    def _state(self):
        return None if self.state_fn is None else self.state_fn()

    def start_episode(self, obs: np.ndarray, alive: np.ndarray) -> None:
        self.current = self._write(obs, alive, self._state())

    def add(self, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
            died: np.ndarray, alive_next: np.ndarray) -> None:
        """One cycle of the team; arguments as :meth:`ReplayBuffer.add` (arrays by slot)."""
        row = self.current
        if row < 0:
            return
        acted = self.alive[row]
        self.action[row] = np.where(acted, action, 0)
        self.agent_reward[row] = np.where(acted, reward, 0.0)
        total = float(reward[acted].sum())
        self.reward[row] = total if self.team_reward == "sum" else total / self.n_agents
        terminal = not alive_next.any()
        self.done[row] = terminal
        if terminal:
            self.next[row] = row  # never read: done masks it (and sample() masks its agents)
            self.current = -1
        else:
            self.current = self.next[row] = self._write(next_obs, alive_next, self._state())
        self.ready[row] = True

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        ready = np.flatnonzero(self.ready[: self.size])
        idx = ready[self.rng.integers(0, len(ready), batch_size)]
        nxt = self.next[idx]
        done = self.done[idx]
        return {
            "obs": self.obs[idx],
            "state": self.state[idx],
            "alive": self.alive[idx],
            "action": self.action[idx].astype(np.int64),
            "reward": self.reward[idx],
            "agent_reward": self.agent_reward[idx],
            "next_obs": self.obs[nxt],
            "next_state": self.state[nxt],
            # a terminal step has no next agents: nothing to evaluate there
            "next_alive": self.alive[nxt] & ~done[:, None],
            "done": done,
        }

    # the arrays saved for resume (see _Persistent)
    ARRAYS = ("obs", "state", "alive", "action", "reward", "agent_reward", "done", "next",
              "ready")
