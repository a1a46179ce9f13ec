"""Unit tests of the pieces: buffer, schedule, targets, soft update, win rule, export, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from battle_rl.algos.ddqn import td_target
from battle_rl.buffer import ReplayBuffer, quantize
from battle_rl.data import EpsilonSchedule
from battle_rl.env import OBS_SHAPE, winner
from battle_rl.networks import (CourseQNetwork, DuelingHead, PolicyLoadError, QNetwork,
                                build_q_network, export_policy, load_course_net, load_policy,
                                soft_update)

from conftest import needs_opponents


def obs_with_id(ids):
    """Observations whose HP channel encodes an id (in 0.01 steps), to trace rows."""
    o = np.zeros((len(ids), *OBS_SHAPE), np.float32)
    o[:, 0, 0, 2] = np.asarray(ids) / 100.0
    return o


def ids_of(obs_u8):
    return obs_u8[:, 0, 0, 2].astype(int)


class TestReplayBuffer:
    def test_next_observation_is_the_agents_next_row(self):
        buf = ReplayBuffer(capacity=200, n_agents=3, seed=0)
        alive = np.array([True, True, True])
        buf.start_episode(obs_with_id([1, 2, 3]), alive)
        died = np.array([False, True, False])
        buf.add(np.array([4, 5, 6]), np.array([0.5, -1.0, 2.0], np.float32),
                obs_with_id([11, 0, 13]), died, alive & ~died)
        assert len(buf) == 3
        b = buf.sample(64)
        by_id = {i: (a, r, n, d) for i, a, r, n, d in
                 zip(ids_of(b["obs"]), b["action"], b["reward"], ids_of(b["next_obs"]), b["done"])}
        assert by_id[1] == (4, 0.5, 11, False)
        assert by_id[3] == (6, 2.0, 13, False)
        assert by_id[2][0] == 5 and by_id[2][1] == -1.0 and by_id[2][3]  # died: terminal
        # the dead slot no longer acts: next cycle adds transitions for slots 0 and 2 only
        buf.add(np.array([1, 9, 2]), np.zeros(3, np.float32), obs_with_id([21, 0, 23]),
                np.zeros(3, bool), np.array([True, False, True]))
        assert len(buf) == 5
        assert buf.size == 3 + 2 + 2  # every observation stored once

    def test_wrap_around_keeps_fifo_and_consistent_pairs(self):
        n = 4
        buf = ReplayBuffer(capacity=2 * n + 3, n_agents=n, seed=1)  # tiny: wraps every 2 cycles
        alive = np.ones(n, bool)
        buf.start_episode(obs_with_id([10, 11, 12, 13]), alive)
        for t in range(1, 30):
            ids = np.array([10 * (t + 1) % 250 + i for i in range(n)]) % 250
            buf.add(np.full(n, t % 21), np.full(n, float(t), np.float32), obs_with_id(ids),
                    np.zeros(n, bool), alive)
        assert buf.size == buf.capacity
        b = buf.sample(500)
        # every sampled transition pairs an observation with the one written a cycle later
        cur, nxt, rew = ids_of(b["obs"]), ids_of(b["next_obs"]), b["reward"]
        assert np.all((nxt - cur) % 250 == 10)
        # and only recent cycles survive (FIFO): rewards are the last cycles' numbers
        assert rew.min() >= 29 - 2 and rew.max() == 29
        assert not b["done"].any()

    def test_final_rows_of_truncated_episode_are_never_sampled(self):
        buf = ReplayBuffer(capacity=100, n_agents=2, seed=0)
        alive = np.ones(2, bool)
        buf.start_episode(obs_with_id([1, 2]), alive)
        buf.add(np.array([3, 4]), np.zeros(2, np.float32), obs_with_id([5, 6]),
                np.zeros(2, bool), alive)  # time limit: not a death, bootstraps from row 5/6
        buf.start_episode(obs_with_id([7, 8]), alive)
        b = buf.sample(200)
        assert set(ids_of(b["obs"])) == {1, 2}
        assert set(ids_of(b["next_obs"])) == {5, 6}
        assert not b["done"].any()

    def test_n_step_returns_hand_computed(self):
        """Slot 0 lives 3 cycles then dies, slot 1 lives on; 3-step returns with gamma 0.5."""
        buf = ReplayBuffer(capacity=100, n_agents=2, seed=0, n_step=3, gamma=0.5)
        buf.start_episode(obs_with_id([1, 2]), np.ones(2, bool))
        cycles = [([10, 20], [1.0, 2.0], [False, False]),
                  ([11, 21], [4.0, 8.0], [False, False]),
                  ([0, 22], [16.0, 32.0], [True, False])]  # slot 0 dies at the 3rd cycle
        for ids, rewards, died in cycles:
            buf.add(np.zeros(2, int), np.array(rewards, np.float32), obs_with_id(ids),
                    np.array(died), ~np.array(died))
        b = buf.sample(400)
        got = {i: (r, n, d, g) for i, r, n, d, g in
               zip(ids_of(b["obs"]), b["reward"], ids_of(b["next_obs"]), b["done"],
                   b["discount"])}
        assert got[1][0] == pytest.approx(1 + 0.5 * 4 + 0.25 * 16) and got[1][2]  # to death
        assert got[2] == pytest.approx((2 + 0.5 * 8 + 0.25 * 32, 22, False, 0.125))
        assert got[20] == pytest.approx((8 + 0.5 * 32, 22, False, 0.25))  # cut: 22 not played
        assert got[21] == pytest.approx((32, 22, False, 0.5))
        assert got[10][0] == pytest.approx(4 + 0.5 * 16) and got[10][2]

    def test_compact_and_quantisation_exact_for_hp_steps(self):
        buf = ReplayBuffer(capacity=1000, n_agents=81)
        assert buf.bytes_per_row <= 1024
        hp = np.round(np.arange(0, 101) / 100.0, 2).astype(np.float32)
        assert np.allclose(quantize(hp) / 100.0, hp, atol=1e-6)

    def test_capacity_too_small_is_refused(self):
        with pytest.raises(ValueError, match="at least"):
            ReplayBuffer(capacity=100, n_agents=81)


def test_epsilon_schedule_linear_then_flat():
    s = EpsilonSchedule(start=1.0, end=0.1, decay=50)
    assert s(0) == 1.0
    assert s(25) == pytest.approx(0.55)
    assert s(50) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.1)


def test_td_targets_hand_computed():
    reward = torch.tensor([1.0, 0.5])
    done = torch.tensor([False, True])
    next_q_target = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, 0.0]])
    next_q_online = torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 0.0]])
    gamma = 0.9
    # plain (report): 1 + 0.9 * max(1, 3, 2) = 3.7 ; terminal: 0.5
    assert torch.allclose(td_target(reward, done, next_q_target, None, gamma),
                          torch.tensor([3.7, 0.5]))
    # double: online argmax is action 2, valued by the target net at 2.0 -> 1 + 1.8 = 2.8
    assert torch.allclose(td_target(reward, done, next_q_target, next_q_online, gamma),
                          torch.tensor([2.8, 0.5]))


def test_soft_update_moves_by_tau():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in target.parameters()]
    soft_update(target, online, 0.25)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.25 * o + 0.75 * b)
    soft_update(target, online, 1.0)
    for t, o in zip(target.parameters(), online.parameters()):
        assert torch.allclose(t, o)


@pytest.mark.parametrize("blue,red,verdict", [(10, 5, "blue"), (9, 5, "draw"), (5, 10, "red"),
                                              (0, 0, "draw"), (81, 76, "blue"), (3, 7, "draw")])
def test_win_rule(blue, red, verdict):
    assert winner(blue, red) == verdict


def test_seed_network_shape():
    net = QNetwork()
    assert net(torch.zeros(7, 5, 13, 13)).shape == (7, 21)
    # two 3x3 convs of 5 channels, 405 -> 120 -> 21
    assert [type(m).__name__ for m in net.cnn] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]
    assert net.head[0].in_features == 405 and net.head[0].out_features == 120
    assert net.head[-1].out_features == 21


def test_torchscript_export_equals_module(tmp_path):
    torch.manual_seed(0)
    net = QNetwork()
    path = export_policy(net, tmp_path / "policy.pt")
    loaded = torch.jit.load(str(path))
    x = torch.rand(33, 5, 13, 13)
    assert torch.equal(loaded(x), net(x))
    assert isinstance(load_policy(path), torch.jit.ScriptModule)


def test_dueling_head_splits_value_and_advantage(tmp_path):
    from battle_rl.algos.ddqn import DQN
    from battle_rl.mean_field import MeanFieldQNetwork

    torch.manual_seed(0)
    cfg = {"conv_channels": [4, 4], "hidden": [16], "dueling": True}
    net = build_q_network(cfg)
    out = net.head[-1]
    assert isinstance(out, DuelingHead)
    assert isinstance(build_q_network({**cfg, "dueling": False}).head[-1], torch.nn.Linear)
    x = torch.rand(9, 5, 13, 13)
    q = net(x)
    assert q.shape == (9, 21)
    # the mean over actions is the value stream; the differences are the advantage's
    features = net.head[:-1](net.cnn(x).flatten(1))
    assert torch.allclose(q.mean(1), out.value(features).squeeze(1), atol=1e-6)
    adv = out.advantage(features)
    assert torch.allclose(q[:, 3] - q[:, 7], adv[:, 3] - adv[:, 7], atol=1e-6)
    # exported and rebuilt from a checkpoint, it is the same policy
    assert torch.equal(torch.jit.load(str(export_policy(net, tmp_path / "p.pt")))(x), q)
    ckpt = {"hyper_parameters": {"network": cfg},
            "state_dict": {f"q_net.{k}": v for k, v in net.state_dict().items()}}
    assert torch.equal(DQN.policy_from_checkpoint(ckpt)(x), q)
    # MF-Q's network takes the same head
    mf = MeanFieldQNetwork(**cfg)
    assert isinstance(mf.head[-1], DuelingHead) and mf(x, torch.rand(9, 21)).shape == (9, 21)


@pytest.mark.parametrize("option", ["dueling", "action_mask"])
def test_q_network_options_are_config_choices_of_the_q_learners_only(option):
    from battle_rl.config import ConfigError, compose_overrides, validate_train

    for algo in ("ddqn", "dqn", "mfq"):
        cfg = compose_overrides("config", [f"algo={algo}", f"algo.network.{option}=true"])
        validate_train(cfg)
        assert cfg.algo.network[option] is True
    for algo in ("qmix", "ippo"):
        with pytest.raises(ConfigError, match=f"{option}=true is not available for algo={algo}"):
            validate_train(compose_overrides("config", [f"algo={algo}",
                                                        f"+algo.network.{option}=true"]))


def test_network_reading_some_channels_ignores_the_others_and_still_takes_five(tmp_path):
    """``channels=[0, 2, 4]``: the first layer reads walls and HP only (3 x 169 inputs), the
    presence channels change nothing, and the exported policy still takes (N, 5, 13, 13)."""
    net = QNetwork(conv_channels=[], hidden=[16], action_mask=True, channels=[0, 2, 4])
    assert net.head[0].in_features == 3 * 13 * 13
    x = torch.rand(6, 5, 13, 13)
    y = x.clone()
    y[:, [1, 3]] = torch.rand(6, 2, 13, 13)
    assert torch.equal(net(x), net(y))
    y[:, 4, 6, 7] += 1.0  # an enemy's HP next to the agent: the values and the mask change
    assert not torch.equal(net(x), net(y))
    assert torch.equal(torch.jit.load(str(export_policy(net, tmp_path / "p.pt")))(x), net(x))
    assert QNetwork(conv_channels=[5], hidden=[8], channels=[0, 4]).cnn[0].in_channels == 2
    with pytest.raises(ValueError, match="channels are 0..4"):
        QNetwork(channels=[0, 5])


def test_network_channels_and_guided_exploration_are_checked_before_training():
    from battle_rl.config import ConfigError, compose_overrides, validate_train

    validate_train(compose_overrides("config", ["algo=dqn", "algo.network.channels=[1,3]"]))
    validate_train(compose_overrides("config", ["algo=mfq", "hparams.explore_with=scripted"]))
    for overrides, message in [
        (["algo.network.channels=[4,2]"], "distinct observation channels 0-4 in increasing"),
        (["algo.network.channels=[0,7]"], "distinct observation channels 0-4 in increasing"),
        (["algo.network.channels=[]"], "distinct observation channels 0-4 in increasing"),
        (["algo=qmix", "+algo.network.channels=[0,2,4]"], "not available for algo=qmix"),
        (["hparams.explore_with=greedy"], "hparams.explore_with='greedy' is not allowed"),
        (["algo=vdn", "hparams.explore_with=scripted"], "not available for algo=vdn"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_train(compose_overrides("config", overrides))


@pytest.mark.parametrize("side", ["blue", "red"])
def test_guided_exploration_plays_the_scripted_agents_moves(side):
    """With ``explore_with=scripted`` an exploring agent plays what the scripted agent would in
    its place (in the learner's frame: advancing as blue does; on the red side through the
    mirror); the greedy agents still play the network's choice."""
    from battle_rl.algos.ddqn import DQN, exploration_guide
    from battle_rl.env import BattleEnv
    from battle_rl.league.opponents import RandomOpponent, ScriptedOpponent
    from battle_rl.league.sides import mirror_obs_hwc

    learner = DQN(network={"conv_channels": [], "hidden": [16], "action_mask": True})
    env = BattleEnv(max_cycles=20)
    stream = learner.dataset_class(
        env=env, opponent=RandomOpponent(seed=0), learner=learner,
        buffer=learner.make_buffer(OmegaConf.create({"buffer_size": 1000}), 162, 81, 0),
        batch_size=8, epsilon=EpsilonSchedule(1.0, 1.0, 0), both_teams=True,
        red_share=1.0 if side == "red" else 0.0, guide=exploration_guide("scripted"))
    stream.play_cycle()  # a few cycles in, the teams have moved
    stream.play_cycle()
    scripted = ScriptedOpponent(advance_dx=-1)
    obs = stream.obs[side]
    seen = mirror_obs_hwc(obs) if side == "red" else obs
    played = stream._learner_actions(np.ascontiguousarray(seen), env.alive[side])
    assert np.array_equal(played, scripted.act(np.ascontiguousarray(seen), env.alive[side]))
    stream.epsilon_schedule = EpsilonSchedule(0.0, 0.0, 0)
    greedy = stream._learner_actions(np.ascontiguousarray(seen), env.alive[side])
    assert np.array_equal(greedy, learner.greedy(np.ascontiguousarray(seen), env.alive[side]))
    assert exploration_guide("random") is None


def test_masked_learner_explores_and_learns_only_what_can_happen():
    """Under an action mask, exploring agents draw only allowed actions (each of them), and a
    stored action the mask rules out (the other team's, a random opponent's) is learned as
    the stay it amounted to."""
    from battle_rl.algos.ddqn import DQN
    from battle_rl.networks import STAY, as_played

    learner = DQN(network={"conv_channels": [], "hidden": [16], "action_mask": True})
    obs = np.zeros((400, *OBS_SHAPE), np.float32)
    obs[:, 6, 6, 1] = 1  # itself
    obs[:, 6, 7, 3] = obs[:, 6, 7, 4] = 1  # an enemy to the right: attack (0, +1) allowed
    obs[:, 5, :, 0] = 1  # a wall along the row above: the four moves up can never happen
    x = torch.from_numpy(obs).permute(0, 3, 1, 2)
    valid = learner.q_net.valid_actions(x)[0]
    assert valid.sum() == 10 and valid[STAY] and not valid[:4].any() and valid[13 + 4]
    drawn = learner.random_actions(obs, np.random.default_rng(0))
    assert set(drawn.tolist()) == set(torch.nonzero(valid).flatten().tolist())
    action = torch.tensor([2, 17, 13, 8])
    assert as_played(learner.q_net.valid_actions(x[:4]), action).tolist() == [STAY, 17, STAY, 8]
    unmasked = DQN(network={"conv_channels": [], "hidden": [16]})
    assert len(set(unmasked.random_actions(obs, np.random.default_rng(0)).tolist())) == 21


@pytest.mark.parametrize("final", [False, True])
def test_course_formats_round_trip(tmp_path, final):
    net = CourseQNetwork(final=final)
    path = tmp_path / "red.pt"
    torch.save(net.state_dict(), path)
    loaded = load_course_net(path)
    x = torch.rand(4, 5, 13, 13)
    assert torch.equal(loaded(x), net(x))
    assert isinstance(loaded.last_layer, torch.nn.Linear) == final


@needs_opponents
@pytest.mark.parametrize("name,final", [("red.pt", False), ("red_final.pt", True)])
def test_course_files_load(opponents_dir, name, final):
    net = load_course_net(opponents_dir / name)
    assert isinstance(net.last_layer, torch.nn.Linear) == final
    assert net(torch.zeros(2, 5, 13, 13)).shape == (2, 21)


def test_load_policy_errors_are_plain(tmp_path):
    with pytest.raises(PolicyLoadError, match="not found"):
        load_policy(tmp_path / "missing.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PolicyLoadError, match="not a readable PyTorch file"):
        load_policy(bad)
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(PolicyLoadError, match="neither"):
        load_policy(other)
