"""Playing either team: the left-right mirror of observations and actions.

Red starts at small x, blue at large x, and a network trained on one side plays badly on the
other. Mirroring the map along x turns one side into the other: flip the observation along
its x axis (W, columns) and mirror the chosen action. The action layout, read off the game:
actions 0..12 move to the cells of the diamond of radius 2 and 13..20 attack the 8
neighbours, both in row-major order with rows = dy and columns = dx (checked against the
engine in ``tests/test_sides.py``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

MOVES = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) <= 2]
ATTACKS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
OFFSETS = MOVES + ATTACKS  # action -> (dy, dx)


def _mirror_table(sy: int = 1, sx: int = -1) -> list[int]:
    """Action a -> the action with offset (sy*dy, sx*dx), in the same family (move/attack)."""
    table = []
    for a, (dy, dx) in enumerate(OFFSETS):
        family = MOVES if a < len(MOVES) else ATTACKS
        base = 0 if a < len(MOVES) else len(MOVES)
        table.append(base + family.index((sy * dy, sx * dx)))
    return table


ACTION_MIRROR = _mirror_table()            # left-right: blue <-> red
ACTION_FLIP_Y = _mirror_table(sy=-1, sx=1)  # top-bottom: the map's symmetry within a side
_FLIP_Y = np.array(ACTION_FLIP_Y)


def flip_y_rows(batch: dict, rows, y_axis: int = 1) -> dict:
    """Replace rows ``rows`` of a replay batch (numpy, HWC observations, or channels first with
    ``y_axis=2``) by their top-bottom mirror image: views flipped along y, actions, action
    masks and mean actions mirrored. The local rules of the game do not change under this
    flip, so a transition seen flipped is one more the agent could have played (data
    augmentation; the spawn squares are symmetric up to a cell).
    """
    for key in ("obs", "next_obs"):
        batch[key][rows] = np.flip(batch[key][rows], y_axis)
    batch["action"][rows] = _FLIP_Y[batch["action"][rows]]
    # per-action columns (the action masks the buffer stored, MF-Q's mean actions)
    for key in ("valid", "next_valid", "mean_action", "next_mean_action"):
        if key in batch:
            batch[key][rows] = batch[key][rows][:, _FLIP_Y]
    return batch


def mirror_obs_hwc(obs):
    """Flip (N, 13, 13, 5) observations along x (numpy or torch)."""
    return obs[:, :, ::-1] if not isinstance(obs, torch.Tensor) else obs.flip(2)


class Mirrored(nn.Module):
    """A Q-network seen through the mirror: (N, 5, 13, 13) -> (N, 21) for the other side.

    Q'(o)[a] = Q(flip(o))[mirror(a)], so ``argmax`` of the result is the mirrored action.
    An MF-Q network (``uses_mean_action``) also gets the mean action (N, 21) mirrored: the
    share of action a on this side is the share of mirror(a) on the network's side.
    It is TorchScript-able and exports like any policy.
    """

    __constants__ = ["uses_mean_action"]  # TorchScript compiles only the branch taken

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.uses_mean_action = bool(getattr(net, "uses_mean_action", False))
        self.register_buffer("mirror", torch.tensor(ACTION_MIRROR), persistent=False)

    def forward(self, obs: torch.Tensor, mean_action: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        if self.uses_mean_action:
            mirrored = None if mean_action is None else mean_action.index_select(1, self.mirror)
            return self.net(obs.flip(3), mirrored).index_select(1, self.mirror)
        return self.net(obs.flip(3)).index_select(1, self.mirror)
