"""MF-Q: the mean action (helper, replay rows, every player that feeds it), the mirror, the
mean-field target, and the exported policy's two call forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from battle_rl.algos.ddqn import td_target
from battle_rl.algos.mfq import MFQ, mean_field_target
from battle_rl.buffer import MeanActionReplayBuffer
from battle_rl.env import N_ACTIONS, OBS_SHAPE
from battle_rl.evaluation import Evaluator
from battle_rl.league.opponents import NetOpponent, RandomOpponent
from battle_rl.league.sides import ACTION_MIRROR, Mirrored
from battle_rl.mean_field import MeanFieldQNetwork, mean_action
from battle_rl.networks import export_policy, load_policy

MIRROR = torch.tensor(ACTION_MIRROR)


def test_mean_action_counts_only_the_agents_that_acted():
    actions = np.array([3, 3, 5, 20, 7])
    acted = np.array([True, True, True, True, False])
    m = mean_action(actions, acted)
    assert m.shape == (N_ACTIONS,) and m.dtype == np.float32
    assert m[3] == 0.5 and m[5] == 0.25 and m[20] == 0.25 and m[7] == 0.0
    assert m.sum() == pytest.approx(1.0)
    assert not mean_action(actions, np.zeros(5, bool)).any()  # nobody acted: zeros


class TestReplay:
    def test_rows_hold_the_previous_cycle_mean_and_batches_the_next(self):
        n = 4
        buf = MeanActionReplayBuffer(64, n_agents=2 * n, team_size=n, seed=0)
        obs = np.zeros((2 * n, *OBS_SHAPE), np.float32)
        alive = np.ones(2 * n, bool)
        alive[3] = False  # team 0's slot 3 never plays
        buf.start_episode(obs, alive)
        first = buf.current[alive]
        assert not buf.mean_action[first].any()  # first cycle: nobody acted before
        a1 = np.array([1, 1, 2, 9, 4, 4, 4, 4])  # slot 3's 9 must not count
        zeros = np.zeros(2 * n, np.float32)
        buf.add(a1, zeros, obs, np.zeros(2 * n, bool), alive)
        team0 = np.zeros(N_ACTIONS, np.float32)
        team0[[1, 2]] = [2 / 3, 1 / 3]
        team1 = np.eye(N_ACTIONS, dtype=np.float32)[4]
        np.testing.assert_allclose(buf.mean_action[buf.current[:3]], [team0] * 3)
        np.testing.assert_allclose(buf.mean_action[buf.current[4:]], [team1] * 4)
        b = buf.batch(first)  # the first cycle's transitions
        assert not b["mean_action"].any()
        np.testing.assert_allclose(b["next_mean_action"], [team0] * 3 + [team1] * 4)

    def test_mean_actions_survive_resume(self):
        buf = MeanActionReplayBuffer(200, 2, 2, seed=0)
        obs = np.zeros((2, *OBS_SHAPE), np.float32)
        buf.start_episode(obs, np.ones(2, bool))
        buf.add(np.array([5, 6]), np.zeros(2), obs, np.zeros(2, bool), np.ones(2, bool))
        copy = MeanActionReplayBuffer(200, 2, 2, seed=0)
        copy.load_state_dict(buf.state_dict())
        np.testing.assert_array_equal(copy.mean_action, buf.mean_action)
        assert copy.mean_action[buf.current[0], 5] == 0.5


class TestNetwork:
    def test_mean_action_changes_values_and_obs_alone_means_zeros(self, tmp_path):
        torch.manual_seed(0)
        net = MeanFieldQNetwork()
        obs, mean = torch.rand(6, 5, 13, 13), torch.softmax(torch.randn(6, N_ACTIONS), 1)
        assert not torch.allclose(net(obs, mean), net(obs))
        policy = load_policy(export_policy(net, tmp_path / "policy.pt"))
        assert policy.uses_mean_action  # what the players look for, kept in the file
        torch.testing.assert_close(policy(obs, mean), net(obs, mean))
        torch.testing.assert_close(policy(obs), net(obs, torch.zeros(6, N_ACTIONS)))

    def test_mirrored_net_sees_the_mirrored_mean_action(self, tmp_path):
        torch.manual_seed(1)
        net = MeanFieldQNetwork()
        obs, mean = torch.rand(4, 5, 13, 13), torch.softmax(torch.randn(4, N_ACTIONS), 1)
        expected = net(obs.flip(3), mean[:, MIRROR])[:, MIRROR]
        torch.testing.assert_close(Mirrored(net)(obs, mean), expected)
        scripted = load_policy(export_policy(Mirrored(net), tmp_path / "m.pt"))
        torch.testing.assert_close(scripted(obs, mean), expected)


def test_target_is_boltzmann_expectation_and_double_dqn_when_cold():
    torch.manual_seed(0)
    r, done = torch.randn(5), torch.tensor([False, True, False, False, False])
    q_target, q_online = torch.randn(5, N_ACTIONS), torch.randn(5, N_ACTIONS)
    y = mean_field_target(r, done, q_target, q_online, gamma=0.9, temperature=0.5)
    for i in range(5):
        p = np.exp(q_online[i].numpy() / 0.5)
        v = float((p / p.sum()) @ q_target[i].numpy())
        assert float(y[i]) == pytest.approx(float(r[i]) + (0 if done[i] else 0.9 * v), rel=1e-5)
    cold = mean_field_target(r, done, q_target, q_online, gamma=0.9, temperature=1e-6)
    torch.testing.assert_close(cold, td_target(r, done, q_target, q_online, 0.9))


def test_td_loss_uses_each_rows_mean_actions():
    torch.manual_seed(0)
    m = MFQ(temperature=0.2)
    b = 6
    batch = {"obs": torch.randint(0, 101, (b, *OBS_SHAPE), dtype=torch.uint8),
             "next_obs": torch.randint(0, 101, (b, *OBS_SHAPE), dtype=torch.uint8),
             "action": torch.randint(0, N_ACTIONS, (b,)), "reward": torch.randn(b),
             "done": torch.zeros(b, dtype=torch.bool),
             "mean_action": torch.softmax(torch.randn(b, N_ACTIONS), 1),
             "next_mean_action": torch.softmax(torch.randn(b, N_ACTIONS), 1)}
    loss, q = m.td_loss(batch)
    obs, nxt = m.preprocess(batch["obs"]), m.preprocess(batch["next_obs"])
    q_ref = m.q_net(obs, batch["mean_action"])[torch.arange(b), batch["action"]]
    y = mean_field_target(batch["reward"], batch["done"],
                          m.target_net(nxt, batch["next_mean_action"]),
                          m.q_net(nxt, batch["next_mean_action"]), 0.9, 0.2)
    torch.testing.assert_close(q, q_ref)
    torch.testing.assert_close(loss, nn.functional.smooth_l1_loss(q_ref, y.detach()))
    batch["next_mean_action"] = torch.roll(batch["next_mean_action"], 1, 0)
    assert not torch.allclose(m.td_loss(batch)[0], loss)  # the stored ā' matters


def test_masked_mf_q_values_only_what_can_act_and_learns_ruled_out_actions_as_stays(tmp_path):
    from battle_rl.networks import MASKED, STAY

    torch.manual_seed(0)
    m = MFQ(network={"conv_channels": [], "hidden": [16], "action_mask": True})
    obs = torch.zeros(2, *OBS_SHAPE, dtype=torch.uint8)
    obs[:, 6, 6, 1] = 100  # itself; no enemy in reach: every attack ruled out
    mean = torch.softmax(torch.randn(2, N_ACTIONS), 1)
    q = m.q_net(m.preprocess(obs), mean)
    assert (q[:, 13:] == MASKED).all() and (q[:, :13] > MASKED).all()
    batch = {"obs": obs, "next_obs": obs, "action": torch.tensor([15, STAY]),
             "reward": torch.ones(2), "done": torch.ones(2, dtype=torch.bool),
             "mean_action": mean, "next_mean_action": mean}
    _, q_taken = m.td_loss(batch)
    assert torch.equal(q_taken, q[:, STAY])  # the attack on nothing was a stay
    net = load_policy(export_policy(m.q_net, tmp_path / "policy.pt"))
    assert torch.equal(net(m.preprocess(obs), mean), q)


class Counter(nn.Module):
    """Plays action (k + 1) mod 21 when its team's mean action is one-hot(k), action 0 when
    it is zero (a first cycle); records every mean action it is given."""

    def __init__(self):
        super().__init__()
        self.uses_mean_action = True
        self.seen: list[torch.Tensor] = []

    def forward(self, obs, mean_action=None):
        assert mean_action is not None and len(mean_action) == len(obs)
        self.seen.append(mean_action.clone())
        nxt = torch.roll(mean_action, 1, 1)
        nxt[:, 0] += (mean_action.sum(1) == 0).float()
        return nxt


def assert_counted(seen: list[torch.Tensor], cycles: int):
    """The t-th forward got one-hot((t - 1) mod 21) for every row (zeros at t = 0)."""
    assert len(seen) == cycles
    for t, m in enumerate(seen):
        expected = torch.zeros(N_ACTIONS) if t == 0 else torch.eye(N_ACTIONS)[(t - 1) % 21]
        assert torch.equal(m, expected.expand_as(m)), (t, m[0])


@pytest.mark.parametrize("side", ["blue", "red"])
def test_evaluator_feeds_each_game_its_teams_previous_mean_action(side):
    """Two games in lockstep (one forward per cycle for both), on either side: as red the
    network plays through the mirror, and must still see its own actions' mean in its frame."""
    counter = Counter()
    player = NetOpponent(counter if side == "blue" else Mirrored(counter), "mf")
    other = RandomOpponent(0)
    ev = Evaluator(max_cycles=25, n_envs=2)
    blue, red = (player, other) if side == "blue" else (other, player)
    results = ev.play(blue, red, episodes=2, seed=0)
    assert [r.cycles for r in results] == [25, 25]
    assert_counted(counter.seen, 25)
    assert all(len(m) > 81 for m in counter.seen[:5])  # both games' agents in one forward


def test_net_opponent_remembers_its_last_actions_until_a_new_episode():
    counter = Counter()
    player = NetOpponent(Mirrored(counter), "mf")
    obs = np.zeros((81, *OBS_SHAPE), np.float32)
    alive = np.ones(81, bool)
    for _ in range(3):
        player.act(obs, alive)
    player.new_episode()
    player.act(obs, alive)
    assert_counted(counter.seen[:3], 3)
    assert not counter.seen[3].any()


def test_other_policies_still_get_one_argument():
    class OneArg(nn.Module):
        def forward(self, obs):
            return obs.flatten(1)[:, :N_ACTIONS]

    ev = Evaluator(max_cycles=5, n_envs=2)
    r = ev.play(NetOpponent(Mirrored(OneArg()), "x"), RandomOpponent(0), 2)
    assert len(r) == 2


def test_self_play_snapshots_of_mf_q_get_their_mean_action():
    from battle_rl.league.opponents import SelfPlayPool

    pool = SelfPlayPool(seed=0).bind(Counter())
    pool.snapshot(0)
    obs = np.zeros((81, *OBS_SHAPE), np.float32)
    for _ in range(2):
        pool.new_episode()
        for _ in range(3):
            pool.act(obs, np.ones(81, bool))
    seen = pool.snapshots[0].net.net.seen
    assert_counted(seen[:3], 3)
    assert_counted(seen[3:], 3)  # a new episode starts from zeros again


def test_rollouts_act_and_store_with_the_teams_previous_mean_action():
    from battle_rl.data import EpsilonSchedule, MeanFieldRolloutDataset
    from battle_rl.env import BattleEnv

    class Learner:
        """Greedy: every agent plays (cycle number) mod 21; records the means it gets."""

        def __init__(self):
            self.seen = []

        def greedy(self, obs, alive, mean=None):
            self.seen.append(None if mean is None else mean.copy())
            return np.full(len(obs), len(self.seen) - 1)

    learner = Learner()
    env = BattleEnv(max_cycles=4)
    ds = MeanFieldRolloutDataset(env, RandomOpponent(0), learner,
                                 MeanActionReplayBuffer(2000, env.n_agents, env.n_agents),
                                 batch_size=8, epsilon=EpsilonSchedule(0.0, 0.0, 0), warmup=8)
    for _ in range(3):
        ds.play_cycle()
    assert learner.seen[0] is None  # first cycle: no previous actions
    np.testing.assert_array_equal(learner.seen[1], np.eye(N_ACTIONS)[0])
    np.testing.assert_array_equal(learner.seen[2], np.eye(N_ACTIONS)[1])
    rows = ds.buffer.current[ds.buffer.current >= 0]  # the rows of the fourth cycle
    np.testing.assert_array_equal(ds.buffer.mean_action[rows], [np.eye(N_ACTIONS)[2]] * len(rows))
