"""Mean-field play (MF-Q, Yang et al. 2018): the mean action and the network that takes it.

An agent's mean action ā is the mean of the one-hot actions (N, 21) of its neighbours at the
previous cycle. Here the neighbours are the whole team: ā is the mean over the team's agents
that acted in the previous cycle (all alive ones), as in the paper's reference code for
battle, and zeros at a game's first cycle (no previous actions; the reference code too). So
one vector serves every agent of a team, and any player that sees the team's actions (the
rollouts, the batched evaluator, the opponents) can compute it without the agents' positions.

:class:`MeanFieldQNetwork` maps observations (N, 5, 13, 13) and mean actions (N, 21) to (N, 21)
action values. It declares ``uses_mean_action``: ``networks.q_values`` (and every player built
on it) passes the mean action to such networks only. Called with the observation alone, as a
course harness or a DDQN-only player would, it uses zeros, i.e. what it sees at a first cycle.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from battle_rl.env import N_ACTIONS
from battle_rl.networks import MASKED, ActionMask, q_output, trunk_layers


def mean_action(actions: np.ndarray, acted: np.ndarray) -> np.ndarray:
    """(21,) float32: the mean one-hot action of the slots that acted (zeros if none did)."""
    counts = np.bincount(np.asarray(actions)[acted], minlength=N_ACTIONS)
    return (counts / max(int(acted.sum()), 1)).astype(np.float32)


def rows_mean_action(mean: np.ndarray | None, n: int) -> np.ndarray:
    """One team's mean action repeated for ``n`` rows (zeros before the first cycle)."""
    if mean is None:
        return np.zeros((n, N_ACTIONS), np.float32)
    return np.repeat(mean[None], n, axis=0)


class MeanFieldQNetwork(nn.Module):
    """Q(o, ā): the seed's convolutions over the observation; the mean action is joined to
    their flattened output, then the MLP to 21 values. (N, 5, 13, 13), (N, 21) -> (N, 21).
    ``dueling`` and ``action_mask`` as for :class:`~battle_rl.networks.QNetwork`."""

    # TorchScript compiles only the branches taken
    __constants__ = ["uses_mean_action", "masked", "masked_value"]

    def __init__(self, conv_channels=(5, 5), hidden=(120,), n_actions: int = N_ACTIONS,
                 dueling: bool = False, action_mask: bool = False):
        super().__init__()
        convs, mlp, width = trunk_layers(conv_channels, hidden, extra_inputs=n_actions)
        self.cnn = nn.Sequential(*convs)
        self.head = nn.Sequential(*mlp, q_output(width, n_actions, dueling))
        self.n_actions = n_actions
        self.uses_mean_action = True  # the players pass ā to networks that declare this
        self.masked, self.masked_value = bool(action_mask), MASKED  # as networks.QNetwork's
        self.valid_actions = ActionMask()

    def forward(self, obs: torch.Tensor, mean_action: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        h = self.cnn(obs).flatten(1)
        if mean_action is None:  # no mean action given: zeros, as at a game's first cycle
            mean_action = h.new_zeros(h.shape[0], self.n_actions)
        q = self.head(torch.cat([h, mean_action], 1))
        if self.masked:
            q = q.masked_fill(~self.valid_actions(obs), self.masked_value)
        return q


def build_mean_field_network(network_cfg: dict) -> MeanFieldQNetwork:
    return MeanFieldQNetwork(**dict(network_cfg))
