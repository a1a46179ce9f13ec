"""VDN and QMIX: the mixers' defining properties, the team buffer, the TD target on team steps,
and tiny end-to-end runs of every algorithm through train.py and evaluate.py."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from battle_rl.algos import ALGORITHMS, algorithm_class
from battle_rl.algos.qmix import QMIX
from battle_rl.buffer import TeamReplayBuffer
from battle_rl.env import OBS_SHAPE
from battle_rl.evaluation import Evaluator
from battle_rl.league.opponents import RandomOpponent
from battle_rl.mixing import AgentQNetwork, QMixer, VDNMixer
from battle_rl.networks import export_policy, greedy_actions, load_policy

from conftest import TINY, evaluate_policy_and_checkpoint, run_script

N = 81


def some_dead(b: int, seed: int = 0) -> torch.Tensor:
    """(b, 81) alive masks with a different number dead in each row (row 0: none dead)."""
    g = torch.Generator().manual_seed(seed)
    alive = torch.ones(b, N, dtype=torch.bool)
    for i in range(1, b):
        alive[i, torch.randperm(N, generator=g)[: 10 * i]] = False
    return alive


def trained_like_mixer(seed=0) -> QMixer:
    """A QMixer with non-trivial weights (hypernetwork outputs far from 0 and of both signs
    before the absolute value), so that monotonicity is not true by accident."""
    torch.manual_seed(seed)
    m = QMixer(N, (45, 45, 5), embed=8, hyper_hidden=16, conv_channels=(4, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m.double()


class TestMixers:
    def test_qmix_monotonic_numerically(self):
        """dQ_tot/dq_i >= 0 for every alive agent, by central finite differences."""
        m = trained_like_mixer()
        b = 3
        torch.manual_seed(1)
        q = torch.randn(b, N, dtype=torch.float64) * 5
        alive = some_dead(b)
        state = torch.rand(b, 5, 45, 45, dtype=torch.float64)
        eps = 1e-4
        with torch.no_grad():
            # all 81 perturbations of all b rows in one batch: (81 * b) mixes
            e = torch.eye(N, dtype=torch.float64).repeat_interleave(b, 0).view(N, b, N)
            qp = (q.unsqueeze(0) + eps * e).reshape(-1, N)
            qm = (q.unsqueeze(0) - eps * e).reshape(-1, N)
            a = alive.repeat(N, 1)
            s = state.repeat(N, 1, 1, 1)
            grad = ((m(qp, a, s) - m(qm, a, s)) / (2 * eps)).view(N, b).T  # (b, N)
        assert (grad[alive] >= -1e-9).all(), grad[alive].min()
        assert (grad[alive] > 1e-6).float().mean() > 0.5  # and genuinely increasing
        assert grad[~alive].abs().max() < 1e-9  # dead agents: no influence at all

    def test_monotonic_against_autograd_too(self):
        m = trained_like_mixer(seed=3)
        q = (torch.randn(4, N, dtype=torch.float64) * 3).requires_grad_()
        alive = some_dead(4, seed=2)
        m(q, alive, torch.rand(4, 5, 45, 45, dtype=torch.float64)).sum().backward()
        assert (q.grad[alive] >= 0).all()
        assert (q.grad[~alive] == 0).all()

    @pytest.mark.parametrize("mixer", ["qmix", "vdn"])
    def test_dead_agents_do_not_change_q_tot(self, mixer):
        m = trained_like_mixer() if mixer == "qmix" else VDNMixer()
        b = 4
        alive = some_dead(b)
        q = torch.randn(b, N, dtype=torch.float64)
        state = torch.rand(b, 5, 45, 45, dtype=torch.float64)
        junk = q.clone()
        junk[~alive] = torch.randn(int((~alive).sum()), dtype=torch.float64) * 1e3
        junk[0, 0] = q[0, 0]  # row 0 is all alive: unchanged
        out, out_junk = m(q, alive, state), m(junk, alive, state)
        assert torch.equal(out, out_junk)
        # while an alive agent's value does change it
        q2 = q.clone()
        q2[alive] += 1.0
        assert (m(q2, alive, state) != out).all()

    def test_vdn_equals_sum_of_alive_values(self):
        alive = some_dead(5)
        q = torch.randn(5, N)
        expected = torch.stack([q[i][alive[i]].sum() for i in range(5)])
        assert torch.allclose(VDNMixer()(q, alive), expected)

    def test_shapes_for_81_agents_some_dead(self):
        b = 6
        alive = some_dead(b)
        m = QMixer(N, (45, 45, 5))
        out = m(torch.randn(b, N), alive, torch.rand(b, 5, 45, 45))
        assert out.shape == (b,)
        w1 = m.hyper_w1(m.state_net(torch.rand(b, 5, 45, 45)))
        assert w1.shape == (b, N * m.embed)


class TestAgentNetwork:
    def test_ids_change_values_and_default_is_mean_embedding(self):
        torch.manual_seed(0)
        net = AgentQNetwork(N, id_embedding=8)
        with torch.no_grad():
            net.id_embed.weight.normal_()
        x = torch.rand(1, 5, 13, 13).expand(3, -1, -1, -1)  # one observation, three ids
        by_id = net(x, torch.tensor([0, 1, 2]))
        assert not torch.allclose(by_id[0], by_id[1])
        mean_e = net.id_embed.weight.mean(0)
        expected = net.head(torch.cat([net.body(x), mean_e.expand(3, -1)], 1))
        assert torch.allclose(net(x), expected)

    def test_export_takes_optional_agent_ids(self, tmp_path):
        torch.manual_seed(0)
        net = AgentQNetwork(N, id_embedding=4)
        with torch.no_grad():
            net.id_embed.weight.normal_()
        loaded = load_policy(export_policy(net, tmp_path / "policy.pt"))
        x = torch.rand(7, 5, 13, 13)
        ids = torch.arange(7)
        assert loaded(x).shape == (7, 21)
        assert torch.equal(loaded(x), net(x))
        assert torch.equal(loaded(x, ids), net(x, ids))
        assert loaded.uses_agent_id
        # the evaluator's helper passes slot ids to such a network
        obs = x.permute(0, 2, 3, 1).contiguous().numpy()
        alive = np.array([True, False, True, True, False, True, True])
        acts = greedy_actions(loaded, obs, alive, np.arange(7))
        assert (acts[alive] == net(x, ids)[torch.from_numpy(alive)].argmax(1).numpy()).all()
        assert (acts[~alive] == 0).all()

    def test_evaluator_gives_each_slot_its_id(self):
        net = AgentQNetwork(N, id_embedding=4)
        seen = []

        class Spy(torch.nn.Module):
            uses_agent_id = True

            def forward(self, x, agent_id=None):
                seen.append(agent_id.clone())
                return net(x, agent_id)

        Evaluator(max_cycles=2, n_envs=2).play(Spy(), RandomOpponent(0), episodes=2, seed=0)
        assert torch.equal(seen[0], torch.arange(N).repeat(2))  # two games side by side


def obs_with_id(n, value):
    o = np.zeros((n, *OBS_SHAPE), np.float32)
    o[:, 0, 0, 2] = value / 100.0
    return o


class TestTeamBuffer:
    def test_team_steps_link_to_next_state_and_mask_the_dead(self):
        t = {"v": 1}

        def state_fn():
            s = np.zeros((45, 45, 5), np.float32)
            s[0, 0, 4] = t["v"] / 100.0
            return s

        buf = TeamReplayBuffer(50, n_agents=4, state_fn=state_fn, seed=0)
        alive = np.ones(4, bool)
        buf.start_episode(obs_with_id(4, 1), alive)
        t["v"] = 2
        died = np.array([False, True, False, False])
        buf.add(np.array([1, 2, 3, 4]), np.array([1.0, -0.5, 2.0, 0.0], np.float32),
                obs_with_id(4, 2), died, alive & ~died)
        t["v"] = 3
        # episode ends by a wipe-out: every agent terminates
        buf.add(np.array([5, 6, 7, 8]), np.array([5.0, 9.0, 5.0, 5.0], np.float32),
                obs_with_id(4, 3), np.array([True, False, True, True]), np.zeros(4, bool))
        assert len(buf) == 2
        b = buf.sample(200)
        first = b["obs"][:, 0, 0, 0, 2] == 1
        assert first.any() and (~first).any()
        f, s = {k: v[first][0] for k, v in b.items()}, {k: v[~first][0] for k, v in b.items()}
        assert f["reward"] == pytest.approx(2.5) and not f["done"]
        assert f["alive"].all() and (f["next_alive"] == [True, False, True, True]).all()
        assert f["state"][0, 0, 4] == 1 and f["next_state"][0, 0, 4] == 2
        assert (f["next_obs"][:, 0, 0, 2] == 2).all() and (f["action"] == [1, 2, 3, 4]).all()
        # the dead slot's action is stored as 0; the terminal step has no next agents
        assert (s["action"] == [5, 0, 7, 8]).all() and s["done"]
        assert s["reward"] == pytest.approx(15.0) and not s["next_alive"].any()
        # each agent's own reward too, zero for a slot that did not act
        assert (f["agent_reward"] == [1.0, -0.5, 2.0, 0.0]).all()
        assert (s["agent_reward"] == [5.0, 0.0, 5.0, 5.0]).all()

    def test_mean_team_reward_and_truncation_bootstraps(self):
        buf = TeamReplayBuffer(10, n_agents=4, team_reward="mean", seed=0)
        alive = np.ones(4, bool)
        buf.start_episode(obs_with_id(4, 1), alive)
        buf.add(np.zeros(4), np.ones(4, np.float32), obs_with_id(4, 2), np.zeros(4, bool), alive)
        buf.start_episode(obs_with_id(4, 9), alive)  # time limit: the final row is not sampled
        b = buf.sample(50)
        assert (b["reward"] == 1.0).all() and not b["done"].any() and b["next_alive"].all()
        assert (b["obs"][:, 0, 0, 0, 2] == 1).all()

    def test_wraps_fifo(self):
        buf = TeamReplayBuffer(5, n_agents=2, seed=0)
        alive = np.ones(2, bool)
        buf.start_episode(obs_with_id(2, 0), alive)
        for t in range(1, 20):
            buf.add(np.zeros(2), np.full(2, t, np.float32), obs_with_id(2, t), np.zeros(2, bool),
                    alive)
        b = buf.sample(100)
        cur, nxt = b["obs"][:, 0, 0, 0, 2].astype(int), b["next_obs"][:, 0, 0, 0, 2].astype(int)
        assert (nxt == cur + 1).all() and cur.min() >= 15 and (b["reward"] == 2 * nxt).all()


def fake_team_batch(b=3, seed=0):
    rng = np.random.default_rng(seed)
    alive = some_dead(b, seed).numpy()
    next_alive = alive & (rng.random(alive.shape) > 0.1)
    q = lambda x: torch.from_numpy(x)  # noqa: E731
    return {
        "obs": q(rng.integers(0, 101, (b, N, *OBS_SHAPE)).astype(np.uint8)),
        "state": q(rng.integers(0, 2, (b, 45, 45, 5)).astype(np.uint8) * 100),
        "alive": q(alive), "action": q(rng.integers(0, 21, (b, N))),
        "reward": q(rng.normal(size=b).astype(np.float32)),
        "agent_reward": q(rng.normal(size=(b, N)).astype(np.float32) * alive),
        "next_obs": q(rng.integers(0, 101, (b, N, *OBS_SHAPE)).astype(np.uint8)),
        "next_state": q(rng.integers(0, 2, (b, 45, 45, 5)).astype(np.uint8) * 100),
        "next_alive": q(next_alive), "done": q(np.array([False, True, False][:b])),
    }


@pytest.mark.parametrize("mixer,double,agent_loss", [
    ("vdn", True, 0.0), ("vdn", False, 0.0), ("qmix", True, 0.0), ("qmix", True, 0.5)])
def test_td_loss_matches_a_per_agent_computation(mixer, double, agent_loss):
    """The batched loss equals one written agent by agent, with dead slots left out (and,
    with ``agent_loss``, each live agent's own TD error on its own reward added)."""
    torch.manual_seed(0)
    m = QMIX(name=mixer, mixer=mixer, double=double, network={"id_embedding": 4},
             agent_loss=agent_loss)
    m._log_step = lambda *a: None  # no Trainer here to log to
    with torch.no_grad():
        for p in m.target_agent.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # target differs from online
    batch = fake_team_batch()
    loss = m.training_step(batch, 0)
    pre = lambda o: o.permute(2, 0, 1).float().unsqueeze(0) / 100  # noqa: E731
    losses, agent_errors = [], []
    for i in range(3):
        q = torch.zeros(N)
        nq = torch.zeros(N)
        for j in range(N):
            jid = torch.tensor([j])
            if batch["alive"][i, j]:
                q[j] = m.agent_net(pre(batch["obs"][i, j]), jid)[0, batch["action"][i, j]]
            if batch["next_alive"][i, j] and not batch["done"][i]:
                chooser = m.agent_net if double else m.target_agent
                a = chooser(pre(batch["next_obs"][i, j]), jid).argmax(1)
                nq[j] = m.target_agent(pre(batch["next_obs"][i, j]), jid)[0, a]
        st = batch["state"][i].permute(2, 0, 1).float().unsqueeze(0) / 100
        nst = batch["next_state"][i].permute(2, 0, 1).float().unsqueeze(0) / 100
        tot = m.mixer(q.unsqueeze(0), batch["alive"][i:i + 1], st)
        ntot = m.target_mixer(nq.unsqueeze(0), batch["next_alive"][i:i + 1], nst)
        y = batch["reward"][i] + 0.9 * (1 - float(batch["done"][i])) * ntot
        losses.append(torch.nn.functional.smooth_l1_loss(tot, y.detach()))
        for j in np.flatnonzero(batch["alive"][i].numpy()):
            y_j = batch["agent_reward"][i, j] + 0.9 * nq[j]  # nq is 0 after death or the end
            agent_errors.append(torch.nn.functional.smooth_l1_loss(q[j], y_j.detach()))
    expected = torch.stack(losses).mean() + agent_loss * torch.stack(agent_errors).sum() / 3
    assert torch.allclose(loss, expected, atol=1e-5)


def test_registry_knows_every_algorithm():
    assert {"ddqn", "dqn", "qmix", "vdn"} <= set(ALGORITHMS)
    assert algorithm_class("qmix") is algorithm_class("vdn") is QMIX


# the command-line path (train.py, then evaluate.py on policy.pt and last.ckpt) once per learner
# class; tests/test_algorithms.py runs every algorithm of conf/algo/ in-process
@pytest.mark.parametrize("algo", ["ddqn", "qmix"])
def test_tiny_run_exports_policy_that_evaluate_loads(tmp_path, algo, opponents_dir):
    out = tmp_path / "run"
    overrides = list(TINY)
    if algo in ("qmix", "vdn"):  # batches, buffer and warmup count team steps of 81 agents
        team = {"hparams.batch_size": 4, "hparams.warmup": 8, "hparams.buffer_size": 200}
        overrides = [f"{o.split('=')[0]}={team[o.split('=')[0]]}" if o.split("=")[0] in team
                     else o for o in overrides]
    r = run_script("train.py", f"algo={algo}", *overrides, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    policy = torch.jit.load(str(out / "policy.pt"))
    assert policy(torch.zeros(5, 5, 13, 13)).shape == (5, 21)  # one argument, like DDQN
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["name"] == algo
    results = evaluate_policy_and_checkpoint(out, tmp_path, max_cycles=20)
    assert set(results["policy"]) == set(results["ckpt"]) == {"random", "final"}
    assert results["policy"] == results["ckpt"]


def test_training_time_budget_ends_a_run(tmp_path):
    """eval.max_train_seconds stops training (evaluation time excluded) and still exports."""
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith(("trainer.max_steps", "eval.every"))]
    r = run_script("train.py", "algo=vdn", *overrides, "trainer.max_steps=1000000",
                   "hparams.batch_size=2", "hparams.warmup=4", "hparams.buffer_size=200",
                   "eval.every_n_steps=100000", "eval.opponents=[random]",
                   "eval.max_train_seconds=2", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "policy.pt").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < ckpt["global_step"] < 1000000
