"""PPO (IPPO, MAPPO): GAE by hand, the rollout's masking of dead agents and its bootstraps,
the clipped loss against a direct computation, the central critic's state, and the actor
playing where any policy.pt plays (opponent by file through the mirror, self-play)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from battle_rl.algos.ppo import PPO
from battle_rl.data import OnPolicyDataset, gae
from battle_rl.env import OBS_SHAPE, Step
from battle_rl.league.opponents import RandomOpponent, make_opponent
from battle_rl.networks import export_policy

from test_algorithms import tiny_train


def test_gae_matches_a_hand_computation():
    """Agent 0 lives through the rollout (the last row bootstraps), agent 1 dies at t=1
    (terminal; row 2 is not its), agent 2's episode hits the time limit at t=0 (bootstraps
    from its last view) and it starts the next episode at t=1."""
    reward = np.array([[1.0, 0.5, 2.0], [0.0, -1.0, 1.0], [2.0, 0.0, 0.5]])
    value = np.array([[0.5, 1.0, 0.2], [0.4, 0.3, 0.6], [1.0, 0.0, 0.1]])
    next_value = np.array([[0.4, 0.3, 1.5], [1.0, 0.0, 0.1], [2.0, 0.0, 0.7]])
    cont = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0]], bool)
    adv, ret = gae(reward, value, next_value, cont, gamma=0.9, lam=0.8)
    # delta = r + 0.9 V' - V; A_t = delta_t + 0.9 * 0.8 * cont_t * A_{t+1}
    expected = np.array([[0.86 + 0.72 * 2.516, -0.23 + 0.72 * -1.3, 3.15],
                         [0.5 + 0.72 * 2.8, -1.3, 0.49 + 0.72 * 1.03],
                         [2.8, 0.0, 1.03]])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, expected + value, rtol=1e-6)


class FakeEnv:
    """Three agents a team. Blue 1 dies in cycle 2; the time limit ends an episode after 4
    cycles. Every observation and state is tagged with its cycle (and slot), so a minibatch
    row can be traced back."""

    n_agents, map_size = 3, 45

    def __init__(self):
        self.cycle, self._alive = 0, None

    @property
    def alive(self):
        return {t: a.copy() for t, a in self._alive.items()}

    def _obs(self):
        obs = {t: np.zeros((3, *OBS_SHAPE), np.float32) for t in ("red", "blue")}
        for t in obs:
            for i in range(3):
                if self._alive[t][i]:
                    obs[t][i, ..., 0] = 0.01 * (10 * self.cycle + i + 1)
        return obs

    def reset(self, seed=None):
        self.cycle = 0
        self._alive = {t: np.ones(3, bool) for t in ("red", "blue")}
        return self._obs()

    def step(self, actions):
        self.cycle += 1
        before = self._alive["blue"].copy()
        if self.cycle == 2:
            self._alive["blue"][1] = False
        reward = {"blue": np.where(before, 1.0 + self.cycle, 0.0).astype(np.float32),
                  "red": np.zeros(3, np.float32)}
        died = {"blue": before & ~self._alive["blue"], "red": np.zeros(3, bool)}
        done = self.cycle >= 4
        return Step(obs=self._obs(), reward=reward, died=died, alive=self.alive,
                    kills={"red": 0, "blue": 0}, done=done, truncated=done, actions=actions)

    def state(self):
        return np.full((45, 45, 5), self.cycle, np.float32)


@pytest.mark.parametrize("critic", ["local", "central"])
def test_rollout_masks_the_dead_and_bootstraps_the_time_limit(critic):
    torch.manual_seed(0)
    learner = PPO(critic=critic, network={"conv_channels": [3], "hidden": [16]},
                  critic_net={"conv_channels": [3], "hidden": [16]}
                  | ({"state_channels": [2], "state_hidden": 4} if critic == "central" else {}))
    data = OnPolicyDataset(FakeEnv(), RandomOpponent(0), learner, rollout_cycles=6, epochs=2,
                           minibatches=3, gamma=0.9, gae_lambda=0.8,
                           use_state=critic == "central")
    r = data.collect()
    # rows 0-3: the first episode (blue 1 dead from row 2 on), rows 4-5: the next one
    valid = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 1], [1, 1, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(r["valid"], valid)
    assert data.episodes == 1 and data.cycles == 6
    assert (r["reward"][~valid] == 0).all() and (r["value"][~valid] == 0).all()
    assert r["next_value"][1, 1] == 0  # died at t=1: terminal
    cont = np.array([[1, 1, 1], [1, 0, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(r["cont"], cont)
    np.testing.assert_allclose(r["next_value"][cont], r["value"][1:][cont[:-1]])
    # the time limit (t=3) and the rollout's end (t=5) bootstrap from the next views
    env = FakeEnv()
    env.reset()
    for _ in range(4):
        last = env.step(None)
    survivors = last.alive["blue"]
    want = learner.values(last.obs["blue"], survivors,
                          env.state() if critic == "central" else None)
    np.testing.assert_allclose(r["next_value"][3], want, rtol=1e-5)
    assert r["next_value"][3, 1] == 0
    # blue 1 dies again in the second episode's cycle 2 (row 5): terminal, the others not
    assert r["next_value"][5, 1] == 0 and (r["next_value"][5, [0, 2]] != 0).all()
    np.testing.assert_allclose(r["adv"][~valid], 0)

    # each epoch serves every live agent step once, and nothing else
    seen = []
    for batch in data.minibatches_of(r):
        tags = np.rint(batch["obs"][:, 0, 0, 0].numpy() * 100).astype(int)  # 10 * cycle + i + 1
        seen += list(tags)
        if critic == "central":  # each row gets the state of its own cycle
            cyc = batch["state"][batch["state_index"], 0, 0, 0].numpy()
            np.testing.assert_array_equal(cyc, (tags - 1) // 10)
    expected = sorted(10 * (t % 4) + i + 1 for t, i in zip(*np.nonzero(valid)))
    assert sorted(seen) == sorted(expected * 2)


def test_ppo_loss_matches_a_direct_computation():
    torch.manual_seed(1)
    m = PPO(clip=0.2, ent_coef=0.01, vf_coef=0.5, clip_vloss=True, norm_adv=True)
    n = 40
    obs = torch.rand(n, 5, 13, 13)
    with torch.no_grad():
        logp_now = F.log_softmax(m.actor(obs), 1)
        value_now = m.critic(obs)
    action = torch.randint(0, 21, (n,))
    # old log-probabilities off by up to +-0.5: many ratios fall outside [0.8, 1.2]
    old_logp = logp_now.gather(1, action[:, None]).squeeze(1) + torch.linspace(-0.5, 0.5, n)
    batch = {"obs": obs, "action": action, "logp": old_logp, "adv": torch.randn(n) * 3 + 1,
             "ret": torch.randn(n), "value": value_now + torch.linspace(-0.4, 0.4, n)}
    loss, stats = m.ppo_loss(batch)

    adv = (batch["adv"] - batch["adv"].mean()) / (batch["adv"].std() + 1e-8)
    pg, vl, ent = [], [], []
    for k in range(n):
        ratio = float(torch.exp(logp_now[k, action[k]] - old_logp[k]))
        pg.append(-min(ratio * adv[k], min(max(ratio, 0.8), 1.2) * adv[k]))
        v, old, ret = float(value_now[k]), float(batch["value"][k]), float(batch["ret"][k])
        clipped = old + min(max(v - old, -0.2), 0.2)
        vl.append(0.5 * max((v - ret) ** 2, (clipped - ret) ** 2))
        ent.append(-float((logp_now[k].exp() * logp_now[k]).sum()))
    expected = np.mean(pg) - 0.01 * np.mean(ent) + 0.5 * np.mean(vl)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert 0 < stats["train/clip_fraction"] < 1


def test_central_critic_values_depend_on_the_state():
    torch.manual_seed(2)
    m = PPO(critic="central")
    obs = np.random.default_rng(0).random((4, *OBS_SHAPE)).astype(np.float32)
    alive = np.array([True, True, False, True])
    s1, s2 = np.zeros((45, 45, 5), np.float32), np.ones((45, 45, 5), np.float32)
    v1, v2 = m.values(obs, alive, s1), m.values(obs, alive, s2)
    assert v1[2] == v2[2] == 0 and not np.allclose(v1[alive], v2[alive])


def test_actor_plays_as_a_policy_file_and_through_the_mirror(tmp_path):
    """policy.pt of a PPO learner is an opponent by file (red, through the mirror)."""
    m = PPO()
    path = export_policy(m.policy_net(), tmp_path / "policy.pt")
    rival = make_opponent("rival", tmp_path, policies={"rival": str(path)})
    obs = np.random.default_rng(0).random((81, *OBS_SHAPE)).astype(np.float32)
    alive = np.ones(81, bool)
    alive[::3] = False
    actions = rival.act(obs, alive)
    assert actions.shape == (81,) and ((0 <= actions) & (actions < 21)).all()


def test_self_play_with_ppo_exports_snapshots(tmp_path):
    summary = tiny_train("ippo", tmp_path, **{"opponent.weights.random": 0,
                                              "opponent.weights.self_play": 1,
                                              "self_play.every_n_steps": 4})
    assert summary["steps"] == 12
    snaps = sorted(p.name for p in (tmp_path / "snapshots").glob("step-*.pt"))
    assert snaps == ["step-12.pt", "step-4.pt", "step-8.pt"]
    assert torch.jit.load(str(tmp_path / "snapshots" / "step-4.pt"))(
        torch.zeros(2, 5, 13, 13)).shape == (2, 21)
