"""The IterableDataset that plays the game and yields training batches.

Lightning's loop pulls batches; each pull first plays enough cycles (all learner agents in one
batched, epsilon-greedy forward pass; the opponent likewise) to keep ``updates_per_cycle``
updates per cycle, pushes the transitions into the replay buffer and samples a minibatch.
It holds a reference to the learner (not a copy), so acting always uses the current network.
With ``both_teams`` the other team's transitions are stored too, seen through the mirror (its
views flipped, its actions mirrored), as if the learner had played them on its own side.
With ``red_share`` the learner plays the other side in that share of the episodes, through the
same mirror (the opponent mirrored too): the engine resolves each cycle in a fixed team order,
so the other side is a different game that the learner must also play well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset

from battle_rl.buffer import ReplayBuffer, TeamReplayBuffer
from battle_rl.env import N_ACTIONS, OBS_SHAPE, BattleEnv, other
from battle_rl.league.opponents import MirroredOpponent, Opponent
from battle_rl.league.sides import ACTION_MIRROR, flip_y_rows, mirror_obs_hwc
from battle_rl.mean_field import mean_action

_MIRROR = np.array(ACTION_MIRROR)


@dataclass
class EpsilonSchedule:
    """epsilon = max(end, start - (start - end) * t / decay), t counted in ``unit``s."""

    start: float = 1.0
    end: float = 0.05
    decay: float = 2000
    unit: str = "cycle"  # "cycle" (environment steps) or "episode"

    def __call__(self, t: float) -> float:
        if self.decay <= 0:
            return self.end
        return max(self.end, self.start - (self.start - self.end) * t / self.decay)


def stream_metrics(stream) -> dict[str, float]:
    """What every rollout stream logs: its counters, agent-steps and updates per second since
    the last call (``stream._rate_mark``), and the last finished episode."""
    now = time.perf_counter()
    t0, steps0, batches0 = stream._rate_mark
    dt = max(now - t0, 1e-9)
    stream._rate_mark = (now, stream.agent_steps, stream.batches)
    metrics = {"rollout/cycles": stream.cycles, "rollout/episodes": stream.episodes,
               "perf/agent_steps_per_s": (stream.agent_steps - steps0) / dt,
               "perf/updates_per_s": (stream.batches - batches0) / dt}
    metrics.update({f"rollout/{k}": v for k, v in stream.last_episode.items() if k != "episode"})
    return metrics


class RolloutDataset(IterableDataset):
    def __init__(
        self,
        env: BattleEnv,
        opponent: Opponent,
        learner,
        buffer: ReplayBuffer,
        batch_size: int,
        epsilon: EpsilonSchedule,
        updates_per_cycle: float = 1.0,
        warmup: int = 1000,
        max_episodes: int | None = None,
        seed: int = 0,
        team: str = "blue",
        both_teams: bool = False,
        flip_y: bool = False,
        red_share: float = 0.0,
        guide: Opponent | None = None,
    ):
        super().__init__()
        self.env, self.opponent, self.learner, self.buffer = env, opponent, learner, buffer
        self.batch_size, self.epsilon_schedule = batch_size, epsilon
        self.updates_per_cycle, self.warmup = updates_per_cycle, max(warmup, batch_size)
        self.max_episodes, self.seed, self.team = max_episodes, seed, team
        self.both_teams, self.flip_y = both_teams, flip_y
        # the learner's side in this episode: ``team`` (the side its network is trained as),
        # or the other one, in share ``red_share`` of the episodes
        self.red_share, self.side = red_share, team
        self._mirrored_opponent = MirroredOpponent(opponent)
        # exploring agents play this policy's actions instead of random ones (in the learner's
        # own frame): early play then holds real fights, kills and deaths to learn from
        self.guide = guide
        if buffer.n_agents != env.n_agents * (2 if both_teams else 1):
            raise ValueError(f"the replay buffer needs {'2 x ' if both_teams else ''}"
                             f"{env.n_agents} slots, it has {buffer.n_agents}")
        self.rng = np.random.default_rng(seed)
        # True under DDP: the stream never ends by itself (see battle_rl.distributed.SyncStop)
        self.endless = False
        # counters (saved with checkpoints, see state_dict)
        self.cycles = 0
        self.episodes = 0
        self.agent_steps = 0
        self.obs = None  # current observations {team: (N,13,13,5)}; None between episodes
        self.last_episode: dict[str, float] = {}
        self._ep = None
        self._rollout_seconds = 0.0
        self.batches = 0
        self._rate_mark = (time.perf_counter(), 0, 0)  # (time, agent_steps, batches)
        # ``play: process``: the stream runs in a forked process (battle_rl.actor), which
        # holds its state from the first batch until ``close()``
        self.play_in_process = False
        self.actor = None

    def reseed(self, seed: int) -> None:
        """New random streams for the games, exploration, replay sampling and the opponent's
        draws (each DDP rank its own, see ``battle_rl.distributed``)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.buffer.rng = np.random.default_rng(seed)
        self.opponent.reseed(seed)

    # -- acting ---------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        s = self.epsilon_schedule
        return s(self.episodes if s.unit == "episode" else self.cycles)

    def _learner_actions(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        eps = self.epsilon
        n = len(obs)
        explore = self.rng.random(n) < eps
        if (explore | ~alive).all():
            return self._random(obs)
        actions = self._greedy(obs, alive & ~explore)
        if explore.any():
            actions[explore] = self._random(obs[explore])
        return actions

    def _random(self, obs: np.ndarray) -> np.ndarray:
        """Exploring actions: the guide's where there is one, else the learner's own random
        ones (a masked network draws among the actions its mask allows), else uniform."""
        if self.guide is not None:
            return self.guide.act(obs, np.ones(len(obs), bool))
        random_actions = getattr(self.learner, "random_actions", None)
        if random_actions is None:
            return self.rng.integers(0, N_ACTIONS, len(obs))
        return random_actions(obs, self.rng)

    def _greedy(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        return self.learner.greedy(obs, alive)

    def _stored(self, per_team: dict, obs: bool = False, action: bool = False) -> np.ndarray:
        """The rows the replay buffer gets: the learner's team, and with ``both_teams`` the
        other team after them, each seen from the side the learner is trained as."""
        teams = (self.side, other(self.side)) if self.both_teams else (self.side,)
        rows = []
        for t in teams:
            x = per_team[t]
            if t != self.team:  # the other side, mirrored
                x = mirror_obs_hwc(x) if obs else _MIRROR[x] if action else x
            rows.append(x)
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def _start_episode(self) -> None:
        self.opponent.new_episode()
        if self.red_share > 0:  # drawn only when used: a run without it keeps its streams
            swap = self.rng.random() < self.red_share
            self.side = other(self.team) if swap else self.team
        episode_seed = int(self.rng.integers(2**31 - 1))
        self.obs = self.env.reset(seed=episode_seed)
        self.buffer.start_episode(self._stored(self.obs, obs=True), self._stored(self.env.alive))
        self._ep = {"reward": {"red": 0.0, "blue": 0.0}, "kills": {"red": 0, "blue": 0}}

    def play_cycle(self) -> None:
        if self.obs is None:
            self._start_episode()
        me, them = self.side, other(self.side)
        alive = self.env.alive
        if me == self.team:
            actions = {me: self._learner_actions(self.obs[me], alive[me]),
                       them: self.opponent.act(self.obs[them], alive[them])}
        else:  # the learner on the other side: both teams through the mirror
            mirrored = np.ascontiguousarray(mirror_obs_hwc(self.obs[me]))
            actions = {me: _MIRROR[self._learner_actions(mirrored, alive[me])],
                       them: self._mirrored_opponent.act(self.obs[them], alive[them])}
        step = self.env.step(actions)
        # the actions the engine played: on a first cycle blue's are red's (magent2's rule)
        self.buffer.add(self._stored(step.actions, action=True), self._stored(step.reward),
                        self._stored(step.obs, obs=True), self._stored(step.died),
                        self._stored(step.alive))
        self.cycles += 1
        self.agent_steps += int(alive[me].sum() + alive[them].sum())
        for t in ("red", "blue"):
            self._ep["reward"][t] += float(step.reward[t].sum())
            self._ep["kills"][t] += step.kills[t]
        self.obs = step.obs
        if step.done:
            self._end_episode()

    def _end_episode(self) -> None:
        n = self.env.n_agents
        ep = self._ep
        self.episodes += 1
        self.opponent.end_episode(ep["kills"][self.side], ep["kills"][other(self.side)])
        self.last_episode = {
            "episode": self.episodes,
            "blue_reward": ep["reward"]["blue"] / n,
            "red_reward": ep["reward"]["red"] / n,
            "blue_kills": ep["kills"]["blue"],
            "red_kills": ep["kills"]["red"],
            "episode_cycles": self.env.cycle,
        }
        self.obs = None

    # -- the stream -----------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished()

    def _finished(self) -> bool:
        return self.max_episodes is not None and self.episodes >= self.max_episodes

    def _ends(self) -> bool:
        return self._finished() and not self.endless

    def __iter__(self):
        if self.play_in_process:
            from battle_rl.actor import actor_batches

            yield from actor_batches(self)
            return
        credit = 0.0
        warm = False  # latched: counting the ready rows costs a pass over the whole buffer
        while not self._ends():
            t0 = time.perf_counter()
            while not warm or credit < 1.0:
                self.play_cycle()
                warm = warm or len(self.buffer) >= self.warmup
                if warm:
                    credit += self.updates_per_cycle
                if self._ends():
                    break
            if self._ends() and credit < 1.0:
                break
            credit -= 1.0
            batch = self.buffer.sample(self.batch_size)
            if self.flip_y:  # half of the rows, at random, seen top-bottom mirrored
                flip_y_rows(batch, self.rng.random(self.batch_size) < 0.5,
                            getattr(self.buffer, "y_axis", 1))
            batch = {k: torch.from_numpy(v) for k, v in batch.items()}
            self._rollout_seconds += time.perf_counter() - t0
            self.batches += 1
            yield batch

    def log_metrics(self) -> dict[str, float]:
        """Counters, rates since the last call, and the last finished episode, for logging."""
        size = self.actor.call("buffer_size") if self.actor is not None else len(self.buffer)
        return {"train/epsilon": self.epsilon, "rollout/buffer_size": size,
                **stream_metrics(self)}

    # -- persistence (resume) -------------------------------------------------------
    def save_replay(self, ckpt_dir, step: int, rank: int = 0):
        """The replay buffer's file beside a checkpoint (written by the actor, which holds the
        buffer, while one plays)."""
        if self.actor is not None:
            return self.actor.call("save_replay", (ckpt_dir, step, rank))
        from battle_rl.resume import save_replay

        return save_replay(self.buffer, ckpt_dir, step, rank)

    def close(self) -> None:
        """Stop the actor process, if one plays, taking over its counters and random states
        (its replay buffer ends with it: save it first, ``save_replay``)."""
        if self.actor is not None:
            actor, self.actor = self.actor, None
            state = actor.close()
            if state is not None:
                self.load_state_dict(state)

    def state_dict(self) -> dict:
        """Counters and random states (the buffer's rows are saved beside the checkpoint)."""
        if self.actor is not None:
            return self.actor.call("state")
        return {
            "cycles": self.cycles,
            "episodes": self.episodes,
            "agent_steps": self.agent_steps,
            "batches": self.batches,
            "rng": self.rng.bit_generator.state,
            "buffer_rng": self.buffer.rng.bit_generator.state,
            "opponent": self.opponent.state_dict(),
            "last_episode": self.last_episode,
        }

    def load_state_dict(self, state: dict) -> None:
        self.cycles, self.episodes = state["cycles"], state["episodes"]
        self.agent_steps, self.batches = state["agent_steps"], state["batches"]
        self.rng.bit_generator.state = state["rng"]
        self.buffer.rng.bit_generator.state = state["buffer_rng"]
        self.opponent.load_state_dict(state["opponent"])
        self.last_episode = state["last_episode"]
        self.obs = None  # the game itself cannot be saved: a resumed run starts a new episode


class TeamRolloutDataset(RolloutDataset):
    """The same rollout stream over whole team steps, for VDN and QMIX.

    Acting is unchanged (one batched, per-agent epsilon-greedy forward for the team); the
    buffer is a :class:`~battle_rl.buffer.TeamReplayBuffer` that reads the global state from
    this dataset's environment, so a batch holds ``batch_size`` team steps (81 slots each).
    """

    def __init__(self, env: BattleEnv, opponent: Opponent, learner, capacity: int,
                 batch_size: int, epsilon: EpsilonSchedule, team_reward: str = "sum",
                 seed: int = 0, **kwargs):
        state_shape = (env.map_size, env.map_size, 5)
        buffer = TeamReplayBuffer(capacity, env.n_agents, state_shape, state_fn=env.state,
                                  team_reward=team_reward, seed=seed)
        super().__init__(env=env, opponent=opponent, learner=learner, buffer=buffer,
                         batch_size=batch_size, epsilon=epsilon, seed=seed, **kwargs)


class MeanFieldRolloutDataset(RolloutDataset):
    """The rollout stream for MF-Q: the learner's greedy actions also get the mean action of
    its team at the previous cycle (zeros at an episode's first cycle), and the buffer (a
    :class:`~battle_rl.buffer.MeanActionReplayBuffer`) stores it with every row.

    Exploration is epsilon-greedy as for DQN; the mean action counts every agent that acted,
    exploring or not (it is what the team did).
    """

    def _start_episode(self) -> None:
        self.last_mean = None
        super()._start_episode()

    def _greedy(self, obs, alive):
        return self.learner.greedy(obs, alive, self.last_mean)

    def _learner_actions(self, obs, alive):
        actions = super()._learner_actions(obs, alive)
        self.last_mean = mean_action(actions, alive)
        return actions


# -- on-policy rollouts (PPO) -----------------------------------------------------------------
def gae(reward: np.ndarray, value: np.ndarray, next_value: np.ndarray, cont: np.ndarray,
        gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation per agent over a rollout; arrays are (T, N).

    ``next_value[t, i]`` is V of agent i's next observation: 0 where the agent died at t
    (terminal), V of its last view where the time limit ended the episode (truncation
    bootstraps). ``cont[t, i]`` says agent i acts again in row t + 1 of the same episode, so
    its advantage continues there. Rows where the agent did not act hold zeros everywhere and
    get an advantage of 0. Returns the advantages and the returns (advantage + value).
    """
    adv = np.zeros_like(value)
    last = np.zeros_like(value[0])
    for t in reversed(range(len(value))):
        delta = reward[t] + gamma * next_value[t] - value[t]
        last = delta + gamma * lam * cont[t] * last
        adv[t] = last
    return adv, adv + value


class OnPolicyDataset(IterableDataset):
    """On-policy rollouts for PPO, streamed as minibatches.

    A rollout is ``rollout_cycles`` cycles of the game: all alive learner agents act in one
    batched forward (actions sampled from the learner's policy, with their log-probabilities
    and values kept), the opponent likewise. Episodes run on across rollouts. Then GAE per
    agent (an agent's trajectory ends when it dies; the time limit bootstraps), and the agent
    steps are served as ``epochs`` passes of ``minibatches`` shuffled minibatches; then the
    rollout is discarded. Dead agents never enter a minibatch. With ``use_state`` (MAPPO's
    critic) each cycle's global state is kept too, and a minibatch carries the states of the
    cycles it touches with each row's index into them.

    The learner provides ``act(obs, alive, state, rng) -> (actions, logp, values)`` and
    ``values(obs, alive, state) -> values`` (0 for dead slots).
    """

    def __init__(self, env: BattleEnv, opponent: Opponent, learner, rollout_cycles: int,
                 epochs: int, minibatches: int, gamma: float, gae_lambda: float,
                 use_state: bool = False, max_episodes: int | None = None, seed: int = 0,
                 team: str = "blue"):
        super().__init__()
        self.env, self.opponent, self.learner = env, opponent, learner
        self.rollout_cycles, self.epochs, self.minibatches = rollout_cycles, epochs, minibatches
        self.gamma, self.gae_lambda, self.use_state = gamma, gae_lambda, use_state
        self.max_episodes, self.seed, self.team = max_episodes, seed, team
        self.rng = np.random.default_rng(seed)  # episode seeds, action sampling, shuffling
        self.endless = False  # under DDP a rank plays on until every rank stops together
        # counters (saved with checkpoints, see state_dict)
        self.cycles = self.episodes = self.agent_steps = self.batches = self.rollouts = 0
        self.obs = None  # current observations {team: (N,13,13,5)}; None between episodes
        self.last_episode: dict[str, float] = {}
        self._ep = None
        self._rate_mark = (time.perf_counter(), 0, 0)

    # -- playing one rollout -----------------------------------------------------------
    def _start_episode(self) -> None:
        self.opponent.new_episode()
        self.obs = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        self._ep = {"reward": {"red": 0.0, "blue": 0.0}, "kills": {"red": 0, "blue": 0}}

    def _end_episode(self) -> None:
        ep, me = self._ep, self.team
        self.episodes += 1
        self.opponent.end_episode(ep["kills"][me], ep["kills"][other(me)])
        n = self.env.n_agents
        self.last_episode = {"blue_reward": ep["reward"]["blue"] / n,
                             "red_reward": ep["reward"]["red"] / n,
                             "blue_kills": ep["kills"]["blue"], "red_kills": ep["kills"]["red"],
                             "episode_cycles": self.env.cycle}
        self.obs = None

    def collect(self) -> dict[str, np.ndarray]:
        """Play one rollout; (T, N, ...) arrays, with GAE advantages and returns."""
        T, N, me, them = self.rollout_cycles, self.env.n_agents, self.team, other(self.team)
        r = {"obs": np.zeros((T, N, *OBS_SHAPE), np.float32),
             "action": np.zeros((T, N), np.int64), "logp": np.zeros((T, N), np.float32),
             "value": np.zeros((T, N), np.float32), "reward": np.zeros((T, N), np.float32),
             "next_value": np.zeros((T, N), np.float32),
             "valid": np.zeros((T, N), bool), "cont": np.zeros((T, N), bool)}
        if self.use_state:
            size = self.env.map_size
            r["state"] = np.zeros((T, size, size, 5), np.float32)
        state = None
        for t in range(T):
            if self.obs is None:
                self._start_episode()
            alive = self.env.alive
            if self.use_state:
                state = r["state"][t] = self.env.state()
            actions, r["logp"][t], r["value"][t] = self.learner.act(
                self.obs[me], alive[me], state, self.rng)
            step = self.env.step({me: actions, them: self.opponent.act(self.obs[them],
                                                                       alive[them])})
            # an action the engine did not play (blue's on a first cycle: magent2 plays red's
            # there) is no sample of the policy: left out of the policy loss
            r["obs"][t], r["action"][t] = self.obs[me], actions
            r["valid"][t] = alive[me] & (step.actions[me] == actions)
            r["reward"][t] = np.where(alive[me], step.reward[me], 0.0)
            self.cycles += 1
            self.agent_steps += int(alive[me].sum() + alive[them].sum())
            for k in ("red", "blue"):
                self._ep["reward"][k] += float(step.reward[k].sum())
                self._ep["kills"][k] += step.kills[k]
            self.obs = step.obs
            survivors = step.alive[me]  # the dead get next value 0: their episode ended
            if step.done or t == T - 1:  # the survivors' next value: bootstrap from here
                if survivors.any():  # (a wipe-out leaves none: it is terminal for all)
                    next_state = self.env.state() if self.use_state else None
                    r["next_value"][t] = self.learner.values(step.obs[me], survivors,
                                                             next_state)
                if step.done:
                    self._end_episode()
            else:  # they act in the next row, whose values are their next values
                r["cont"][t] = survivors
        cont = r["cont"][:-1]
        r["next_value"][:-1][cont] = r["value"][1:][cont]
        r["adv"], r["ret"] = gae(r["reward"], r["value"], r["next_value"], r["cont"],
                                 self.gamma, self.gae_lambda)
        self.rollouts += 1
        return r

    def minibatches_of(self, r: dict[str, np.ndarray]):
        """``epochs`` passes over the rollout's agent steps, each in shuffled minibatches."""
        rows = np.flatnonzero(r["valid"].ravel())  # (t, i) flattened; the alive ones only
        flat = {k: r[k].reshape(-1, *r[k].shape[2:])
                for k in ("obs", "action", "logp", "value", "adv", "ret")}
        n_agents = r["valid"].shape[1]
        for _ in range(self.epochs):
            for idx in np.array_split(self.rng.permutation(rows), self.minibatches):
                if len(idx) == 0:
                    continue
                batch = {k: torch.from_numpy(v[idx]) for k, v in flat.items()}
                batch["obs"] = batch["obs"].permute(0, 3, 1, 2).contiguous()  # NCHW
                if self.use_state:  # the states of the cycles in this minibatch, once each
                    cycles, index = np.unique(idx // n_agents, return_inverse=True)
                    batch["state"] = torch.from_numpy(r["state"][cycles]).permute(
                        0, 3, 1, 2).contiguous()
                    batch["state_index"] = torch.from_numpy(index.reshape(-1))
                yield batch

    def reseed(self, seed: int) -> None:
        """New random streams for the games, the actions and the opponent's draws (each DDP
        rank its own, see ``battle_rl.distributed``)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.opponent.reseed(seed)

    # -- the stream ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.max_episodes is not None and self.episodes >= self.max_episodes

    def __iter__(self):
        while not (self.finished and not self.endless):
            for batch in self.minibatches_of(self.collect()):
                self.batches += 1
                yield batch

    def log_metrics(self) -> dict[str, float]:
        """Counters, rates since the last call, and the last finished episode, for logging."""
        return {"rollout/rollouts": self.rollouts, **stream_metrics(self)}

    def close(self) -> None:
        """Nothing plays beside this stream (``play: process`` is for replay learners)."""

    # -- persistence (resume) -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters and random states. The rollout in progress is not saved (it is only
        valid for the policy that played it): a resumed run starts a new rollout and a new
        episode."""
        return {"cycles": self.cycles, "episodes": self.episodes,
                "agent_steps": self.agent_steps, "batches": self.batches,
                "rollouts": self.rollouts, "rng": self.rng.bit_generator.state,
                "opponent": self.opponent.state_dict(), "last_episode": self.last_episode}

    def load_state_dict(self, state: dict) -> None:
        for k in ("cycles", "episodes", "agent_steps", "batches", "rollouts", "last_episode"):
            setattr(self, k, state[k])
        self.rng.bit_generator.state = state["rng"]
        self.opponent.load_state_dict(state["opponent"])
        self.obs = None
