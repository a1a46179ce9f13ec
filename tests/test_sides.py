"""The action layout and its mirror, checked against the game; the scripted opponent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from battle_rl.env import BattleEnv
from battle_rl.evaluation import Evaluator, summarize
from battle_rl.networks import QNetwork
from battle_rl.opponents import ScriptedOpponent
from battle_rl.sides import ACTION_MIRROR, ATTACKS, MOVES, OFFSETS, Mirrored, mirror_obs_hwc


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
