"""The lean DDQN update (0.5.0): what the replay buffer stores once per row (the channels the
network reads, channels first; the action mask; bfloat16 input made directly) gives exactly the
loss and Q-values of the update that recomputed them from whole observations at every sampling,
old replays still load, and the A/B benchmark runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from battle_rl.algos.ddqn import DQN, td_target
from battle_rl.buffer import OBS_SCALE, ReplayBuffer, quantize
from battle_rl.env import TEAMS, BattleEnv
from battle_rl.league.sides import flip_y_rows
from battle_rl.networks import greedy_actions
from conftest import needs_opponents

ROOT = Path(__file__).resolve().parent.parent
NETWORK = {"conv_channels": [], "hidden": [32, 32], "action_mask": True, "channels": [0, 2, 4]}
SEED_NETWORK = {"conv_channels": [5, 5], "hidden": [16]}  # the report's: every channel, no mask
HP = OmegaConf.create({"buffer_size": 4000, "n_step": 3})


def filled(buffer: ReplayBuffer, cycles: int = 40, seed: int = 0) -> ReplayBuffer:
    """Real observations of both teams (walls, fights, deaths) in ``buffer``."""
    env, rng = BattleEnv(max_cycles=300), np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    both = lambda d: np.concatenate([d["blue"], d["red"]])  # noqa: E731
    buffer.start_episode(both(obs), both(env.alive))
    for _ in range(cycles):
        actions = {t: rng.integers(0, 21, 81) for t in TEAMS}
        step = env.step(actions)
        buffer.add(both(actions), both(step.reward), both(step.obs), both(step.died),
                   both(step.alive))
    return buffer


def reference_td_loss(module: DQN, batch: dict):
    """The update as it was at 393b028: whole observations, channels and masks recomputed."""
    hp = module.hparams
    obs, next_obs = module.preprocess(batch["obs"]), module.preprocess(batch["next_obs"])
    q = module.q_net(obs).gather(1, module.as_played(obs, batch["action"]).unsqueeze(1))
    with torch.no_grad():
        target = td_target(batch["reward"], batch["done"], module.target_net(next_obs),
                           module.q_net(next_obs), batch["discount"])
    return F.smooth_l1_loss(q.squeeze(1), target), q.squeeze(1)


def twin_batches(module: DQN, seed: int = 3):
    """The same sampled transitions from the lean buffer and from one of whole observations,
    half of them flipped top-bottom as training does."""
    lean = filled(module.make_buffer(HP, 162, 81, seed=seed))
    whole = filled(ReplayBuffer(HP.buffer_size, 162, seed=seed, n_step=3, gamma=0.9))
    assert lean.bytes_per_row <= whole.bytes_per_row == 856
    rows = np.random.default_rng(seed).random(256) < 0.5
    out = []
    for buf in (lean, whole):
        batch = flip_y_rows(buf.sample(256), rows, buf.y_axis)
        out.append({k: torch.from_numpy(v) for k, v in batch.items()})
    assert out[0]["obs"].shape[1:] == (len(module.q_net.channels), 13, 13)
    assert ("valid" in out[0]) == module.q_net.masked
    return out


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("network", [NETWORK, SEED_NETWORK], ids=["default", "seed"])
def test_stored_rows_give_the_q_values_and_loss_of_the_raw_observations(bf16, network):
    torch.manual_seed(0)
    module = DQN(network=network, gamma=0.9)
    lean, whole = twin_batches(module)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, q = module.td_loss(lean)
        ref_loss, ref_q = reference_td_loss(module, whole)
        by_hand_loss, by_hand_q = module.td_loss(whole)  # whole observations, no masks
        # the stored row's Q-values are those of its raw observation through forward()
        x, valid = module.network_input(lean["next_obs"], lean.get("next_valid"))
        raw = module.preprocess(whole["next_obs"])
        assert torch.equal(module.q_net.q_from(x, valid), module.q_net(raw))
    assert torch.equal(q, ref_q) and torch.equal(loss, ref_loss)
    assert torch.equal(by_hand_q, ref_q) and torch.equal(by_hand_loss, ref_loss)


def test_stored_masks_are_the_masks_of_the_stored_observations_flipped_or_not():
    module = DQN(network=NETWORK)
    lean, whole = twin_batches(module)
    for key, valid in (("obs", "valid"), ("next_obs", "next_valid")):
        x = whole[key].permute(0, 3, 1, 2).float() / OBS_SCALE
        assert torch.equal(lean[valid], module.q_net.valid_actions(x))


def test_bfloat16_input_made_at_once_equals_float32_then_cast():
    v = torch.arange(256, dtype=torch.uint8).repeat(64, 1)  # every stored value, vectorised
    assert torch.equal(v.to(torch.bfloat16).div_(OBS_SCALE),
                       v.float().div_(OBS_SCALE).to(torch.bfloat16))


def test_a_replay_of_whole_observations_loads_into_the_lean_buffer():
    """Replays saved by 0.4.0 (whole HWC observations, no masks) resume: the buffer takes
    the network's channels and the masks from them; a shape it cannot use is one line."""
    module = DQN(network=NETWORK)
    lean = filled(module.make_buffer(HP, 162, 81, seed=1))
    old = filled(ReplayBuffer(HP.buffer_size, 162, seed=1, n_step=3, gamma=0.9)).state_dict()
    loaded = module.make_buffer(HP, 162, 81, seed=1)
    loaded.load_state_dict(old)
    for k, v in lean.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    other = DQN(network={**NETWORK, "channels": [0, 3]}).make_buffer(HP, 162, 81, seed=1)
    with pytest.raises(ValueError, match=r"holds observations shaped \(3, 13, 13\), this run "
                                         r"stores \(2, 13, 13\).*checkpoint_buffer=false"):
        other.load_state_dict(lean.state_dict())


def test_the_numpy_mask_is_the_networks_mask():
    obs = np.random.default_rng(0).integers(0, 2, (2000, 13, 13, 5)).astype(np.float32)
    mask = DQN(network=NETWORK).q_net.valid_actions
    from_torch = mask(torch.from_numpy(obs).permute(0, 3, 1, 2)).numpy()
    assert np.array_equal(mask.of_hwc(obs), from_torch)
    assert np.array_equal(mask.of_hwc(quantize(obs)), from_torch)
    assert mask.of_hwc(obs[:0]).shape == (0, 21)  # a cycle where nobody is left to store


def test_quantized_and_float_observations_have_the_same_mask():
    env = BattleEnv(max_cycles=300)
    obs = env.reset(seed=5)["blue"]
    module = DQN(network=NETWORK)
    from_float = module.q_net.valid_actions(torch.from_numpy(obs).permute(0, 3, 1, 2))
    assert np.array_equal(module.stored_valid_actions(quantize(obs)), from_float.numpy())


def test_acting_reads_the_same_values_as_greedy_actions():
    """DQN.greedy copies only the network's channels to NCHW: the same actions as the forward
    of whole observations, dead slots included."""
    torch.manual_seed(0)
    module = DQN(network=NETWORK)
    obs, rng = BattleEnv(max_cycles=300).reset(seed=2)["blue"], np.random.default_rng(0)
    for alive in (np.ones(81, bool), rng.random(81) < 0.5, np.zeros(81, bool)):
        mine, theirs = module.greedy(obs, alive), greedy_actions(module.q_net, obs, alive)
        assert np.array_equal(mine, theirs) and mine.dtype == theirs.dtype


@needs_opponents  # the default recipe's league plays the course nets
@pytest.mark.slow
def test_profile_and_ab_benchmark_run():
    """``benchmarks/profile_update.py --smoke``: the profile (the learner's update by hand),
    and the A/B against a checkout (this one here) through Lightning's loop; what is run full
    size for the figures."""
    script = ROOT / "benchmarks" / "profile_update.py"
    r = subprocess.run([sys.executable, str(script), "--smoke", "threads=1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "update:" in r.stdout and "cycle of play:" in r.stdout
    r = subprocess.run([sys.executable, str(script), "--smoke", "--compare", str(ROOT),
                        "threads=1", "--what", "learner", "stream"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "learner: base" in r.stdout and "stream: base" in r.stdout
    assert "new/base x" in r.stdout


@needs_opponents
def test_profile_worker_times_the_block_asked_for():
    """Each A/B worker times the block it is given: the learner alone (no play) is a
    different figure from the stream (before 2026-12-06 both were the stream)."""
    script = ROOT / "benchmarks" / "profile_update.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for what in ("learner", "stream"):
        r = subprocess.run([sys.executable, str(script), "--worker", "--what", what,
                            "--seconds", "0.3", "--fill", "12", "threads=1",
                            "hparams.batch_size=32", "hparams.warmup=32"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        result = json.loads(r.stdout.split("RESULT ")[-1])
        assert result["block"] == what and result["rate"] > 0
        # the learner block samples the replay its fill played (its stream's first pull plays
        # one cycle, whose credit then never runs out); the stream plays on
        one_cycle = 2 * 81
        if what == "learner":
            assert result["agent_steps_played"] <= one_cycle
        else:
            assert result["agent_steps_played"] > 2 * one_cycle
