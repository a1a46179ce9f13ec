"""The action layout and its mirror, checked against the game; the scripted opponent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from battle_rl.env import BattleEnv
from battle_rl.evaluation import Evaluator, summarize
from battle_rl.league.opponents import ScriptedOpponent
from battle_rl.league.sides import (ACTION_FLIP_Y, ACTION_MIRROR, ATTACKS, MOVES, OFFSETS, Mirrored,
                                    flip_y_rows, mirror_obs_hwc)
from battle_rl.networks import QNetwork


def test_mirror_maps_every_action_twice_back_to_itself():
    assert sorted(ACTION_MIRROR) == list(range(21))
    assert all(ACTION_MIRROR[ACTION_MIRROR[a]] == a for a in range(21))
    for a, b in enumerate(ACTION_MIRROR):
        assert OFFSETS[b] == (OFFSETS[a][0], -OFFSETS[a][1])
    assert len(MOVES) == 13 and len(ATTACKS) == 8 and MOVES[6] == (0, 0)


@pytest.mark.parametrize("action", [1, 2, 3, 5, 7, 9, 10, 11])
def test_move_offsets_match_the_engine(action):
    """A team moving with one action shifts by that action's (dx, dy) (blocked agents aside)."""
    env = BattleEnv(max_cycles=5)
    env.reset(seed=0)
    red = env.handles[0]
    before = env.engine.get_pos(red).copy()
    env.step({"red": np.full(81, action), "blue": np.full(81, 6)})
    moved = env.engine.get_pos(red) - before
    values, counts = np.unique(moved, axis=0, return_counts=True)
    dx, dy = values[counts.argmax()]
    assert (dy, dx) == OFFSETS[action]


def test_observation_x_axis_is_columns():
    """The wall at x = 0 appears in the column left of the centre for an agent at x = 1."""
    env = BattleEnv(max_cycles=5)
    obs = env.reset(seed=0)["red"]
    pos = env.engine.get_pos(env.handles[0])
    i = int(np.flatnonzero(pos[:, 0] == 1)[0])
    walls = np.argwhere(obs[i, :, :, 0] > 0)
    assert set(walls[:, 1]) == {6 - 1}


def test_observation_y_axis_is_rows():
    """The wall at y = 0 appears in the row above the centre for an agent at y = 1: the
    top-bottom flip of the augmentation (hparams.flip_y) reverses axis H."""
    env = BattleEnv(max_cycles=20)
    env.reset(seed=0)
    for _ in range(8):  # walk the red team up (dy = -2) until its top row reaches y = 1
        step = env.step({"red": np.full(81, MOVES.index((-2, 0))), "blue": np.full(81, 6)})
    pos = env.engine.get_pos(env.handles[0])
    top = int(np.flatnonzero((pos[:, 1] == 1) & (pos[:, 0] >= 7))[0])  # no side wall in view
    walls = np.argwhere(step.obs["red"][top, :, :, 0] > 0)
    assert set(walls[:, 0]) == {6 - 1}


def test_flip_y_mirrors_rows_actions_and_mean_actions():
    assert sorted(ACTION_FLIP_Y) == list(range(21))
    for a, b in enumerate(ACTION_FLIP_Y):
        assert OFFSETS[b] == (-OFFSETS[a][0], OFFSETS[a][1]) and ACTION_FLIP_Y[b] == a
    rng = np.random.default_rng(0)
    batch = {"obs": rng.integers(0, 9, (4, 13, 13, 5)).astype(np.uint8),
             "next_obs": rng.integers(0, 9, (4, 13, 13, 5)).astype(np.uint8),
             "action": np.array([0, 13, 6, 18]), "reward": np.ones(4, np.float32),
             "mean_action": rng.random((4, 21)).astype(np.float32)}
    before = {k: v.copy() for k, v in batch.items()}
    rows = np.array([True, True, False, False])
    flip_y_rows(batch, rows)
    assert np.array_equal(batch["obs"][0], before["obs"][0][::-1])
    assert np.array_equal(batch["next_obs"][1], before["next_obs"][1][::-1])
    assert batch["action"].tolist() == [12, 18, 6, 18]  # up <-> down; unflipped rows kept
    assert np.array_equal(batch["mean_action"][0, ACTION_FLIP_Y], before["mean_action"][0])
    for k in ("obs", "next_obs", "mean_action"):
        assert np.array_equal(batch[k][2:], before[k][2:])


def test_mirrored_network_is_flip_and_action_mirror():
    torch.manual_seed(0)
    net = QNetwork().eval()
    x = torch.rand(6, 5, 13, 13)
    q = net(x)
    qm = Mirrored(net)(x.flip(3))
    assert torch.allclose(qm[:, ACTION_MIRROR], q, atol=1e-6)
    scripted = torch.jit.script(Mirrored(net))
    assert torch.allclose(scripted(x), Mirrored(net)(x))
    o = np.random.rand(2, 13, 13, 5)
    assert np.array_equal(mirror_obs_hwc(o)[:, :, 0], o[:, :, -1])


def test_scripted_attacks_adjacent_enemy_and_chases_otherwise():
    obs = np.zeros((3, 13, 13, 5), np.float32)
    obs[:, 6, 6, 1] = 1  # itself
    obs[0, 6, 7, 3] = 1  # enemy to the right (dy=0, dx=+1): attack 17
    obs[0, 6, 7, 4] = 0.5
    obs[1, 6, 10, 3] = 1  # enemy 4 cells right: move toward it, i.e. +2 in x (action 8)
    # agent 2 sees no enemy: advances toward +x
    acts = ScriptedOpponent(advance_dx=+1).act(obs, np.ones(3, bool))
    assert acts[0] == 13 + ATTACKS.index((0, 1))
    assert OFFSETS[acts[1]] == (0, 2)
    assert OFFSETS[acts[2]][1] > 0


def test_scripted_red_crushes_an_untrained_blue_team():
    torch.manual_seed(0)
    results = Evaluator(max_cycles=150, n_envs=2).play(QNetwork().eval(), ScriptedOpponent(+1), 2)
    row = summarize(results)
    assert row["lose"] == 2 and row["red_kills"] > 3 * row["blue_kills"]


def _scene(env: BattleEnv, blue_cells, red_cells):
    """Reset, then put the agents on the given (x, y) cells (blue slot 0 is the one tested)."""
    env.reset(seed=0)
    engine = env.engine
    engine.reset()
    engine.add_agents(env.handles[0], method="custom", pos=[[x, y, 0] for x, y in red_cells])
    engine.add_agents(env.handles[1], method="custom", pos=[[x, y, 0] for x, y in blue_cells])
    return engine


def _effect(blue_cells, red_cells, action: int) -> bool:
    """Does blue slot 0 doing ``action`` (everyone else staying) change anything: its position
    or an agent's HP?"""
    env = BattleEnv(max_cycles=5)
    engine = _scene(env, blue_cells, red_cells)
    blue, red = env.handles[1], env.handles[0]
    acts = np.full(len(blue_cells), MOVES.index((0, 0)), np.int32)
    acts[0] = action
    engine.set_action(red, np.full(len(red_cells), MOVES.index((0, 0)), np.int32))
    engine.set_action(blue, acts)
    before = engine.get_pos(blue).copy(), engine.get_observation(red)[0][:, 6, 6, 2].copy()
    engine.step()
    after = engine.get_pos(blue), engine.get_observation(red)[0][:, 6, 6, 2]
    return not np.array_equal(before[0], after[0]) or not np.allclose(before[1], after[1])


def test_action_mask_rules_out_what_can_never_change_the_game():
    """For an agent among allies, enemies and a wall, with everyone else staying: every action
    the mask rules out (an attack on an ally or on nothing, a move into the wall or across the
    border) changes nothing, and the mask allows every action that changes something. A move
    into a cell that holds an agent changes nothing here, but stays allowed: it goes through
    when that agent moves out first."""
    from battle_rl.networks import STAY, ActionMask

    me = (1, 20)  # next to the wall at x = 0
    allies = [(2, 20), (1, 22), (2, 21)]
    enemies = [(1, 19), (2, 19), (3, 20)]
    env = BattleEnv(max_cycles=5)
    engine = _scene(env, [me, *allies], enemies)
    obs = engine.get_observation(env.handles[1])[0][:1]  # blue slot 0's view
    valid = ActionMask()(torch.from_numpy(obs).permute(0, 3, 1, 2))[0].tolist()
    occupied = {(x - me[0], y - me[1]) for x, y in allies + enemies}  # (dx, dy)
    for a in range(21):
        changes = _effect([me, *allies], enemies, a)
        assert valid[a] or not changes, (a, OFFSETS[a])
        dy, dx = OFFSETS[a]
        if a < len(MOVES) and a != STAY:
            assert valid[a] == (me[0] + dx > 0)  # only the wall (x = 0) and beyond rule out
            assert changes == (valid[a] and (dx, dy) not in occupied), (a, OFFSETS[a])
    assert valid[STAY] and [a for a in range(13, 21) if valid[a]] == \
        [13 + ATTACKS.index((-1, 0)), 13 + ATTACKS.index((-1, 1))]  # the enemies in reach
    assert all(_effect([me, *allies], enemies, a) for a in range(13, 21) if valid[a])


def test_masked_network_never_picks_a_ruled_out_action(tmp_path):
    from battle_rl.networks import MASKED, ActionMask, export_policy, load_policy

    torch.manual_seed(0)
    env = BattleEnv(max_cycles=30)
    obs = env.reset(seed=3)
    for red_move in [(0, 2)] * 4 + [(0, 1)]:  # the teams meet: attacks become possible
        obs = env.step({"red": np.full(81, MOVES.index(red_move)),
                        "blue": np.full(81, MOVES.index((0, -2)))}).obs
    x = torch.from_numpy(obs["blue"]).permute(0, 3, 1, 2).contiguous()
    valid = ActionMask()(x)
    assert valid[:, 13:].any() and not valid[:, 13:].all()
    net = QNetwork(conv_channels=[], hidden=[32], action_mask=True).eval()
    plain = QNetwork(conv_channels=[], hidden=[32]).eval()
    plain.load_state_dict(net.state_dict())  # the mask adds nothing to the state dict
    q, q_plain = net(x), plain(x)
    assert torch.equal(q[valid], q_plain[valid]) and (q[~valid] == MASKED).all()
    assert valid.gather(1, q.argmax(1, keepdim=True)).all()
    loaded = load_policy(export_policy(net, tmp_path / "policy.pt"))
    assert torch.equal(loaded(x), q)
    # the mirrored network masks in its own frame: red's view of the same scene
    assert valid.sum() > 0 and torch.equal(Mirrored(net)(x.flip(3))[:, ACTION_MIRROR], q)
