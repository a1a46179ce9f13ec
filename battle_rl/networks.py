"""Q-networks, the course's two network formats, and loading/exporting policies.

Every network here maps a float tensor of observations shaped (N, 5, 13, 13) (NCHW, the
course's convention) to (N, 21) action values.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from battle_rl.env import N_ACTIONS, OBS_SHAPE
from battle_rl.league.sides import ATTACKS, MOVES
from battle_rl.safe_load import is_torchscript, torch_load

IN_CHANNELS, VIEW = OBS_SHAPE[2], OBS_SHAPE[0]


from battle_rl.errors import PolicyLoadError  # noqa: E402,F401 (re-exported)


def trunk_layers(conv_channels, hidden, extra_inputs: int = 0, in_channels: int = IN_CHANNELS
                 ) -> tuple[list[nn.Module], list[nn.Module], int]:
    """The seed's trunk as layer lists: 3x3 convolutions (no padding) + ReLU, then fully
    connected + ReLU layers over the flattened result (and ``extra_inputs`` more values joined
    to it: MF-Q's mean action); also the width of the last one."""
    convs, c, size = [], in_channels, VIEW
    for out in conv_channels:
        convs += [nn.Conv2d(c, out, 3), nn.ReLU(inplace=True)]
        c, size = out, size - 2
    mlp, width = [], c * size * size + extra_inputs
    for h in hidden:
        mlp += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return convs, mlp, width


class DuelingHead(nn.Module):
    """Action values from a value and an advantage stream (Wang et al., 2016):
    Q = V + A - mean(A).

    The 13 moves of a cell far from any enemy are worth about the same; the value stream learns
    that worth from every sample, whichever action it took, the advantage stream only the
    differences between actions.
    """

    def __init__(self, width: int, n_actions: int = N_ACTIONS):
        super().__init__()
        self.value = nn.Linear(width, 1)
        self.advantage = nn.Linear(width, n_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(1, keepdim=True)


def q_output(width: int, n_actions: int, dueling: bool) -> nn.Module:
    """The last layer of a Q-network: one linear layer, or the dueling streams."""
    return DuelingHead(width, n_actions) if dueling else nn.Linear(width, n_actions)


STAY = MOVES.index((0, 0))
MASKED = -1.0e4  # the value of an action the mask rules out: below any action value


class ActionMask(nn.Module):
    """The actions that can do something, read off the observation: (N, 5, 13, 13) -> (N, 21)
    bool.

    The engine resolves every attack before any move (``tests/test_sides.py``), so an attack
    on a cell with no enemy in it never hits (there is no friendly fire); a move into a wall
    never happens, nor does a straight two-cell move across the map's border (the view shows
    the border as one wall cell and the void beyond it as empty). Those do exactly what
    staying does, whatever the others do. A move into a cell that holds an agent stays open:
    it goes through when that agent moves out first (a column marching forward). Staying is
    always possible. It has no state: a masked network keeps the state-dict layout of an
    unmasked one.
    """

    __constants__ = ["stay"]

    def __init__(self):
        super().__init__()
        c = VIEW // 2
        # flat cell indices into the view: plain lists, so that the module has no state (a
        # TorchScript module's state dict would carry its buffers, persistent or not)
        self.move_cells: list[int] = [(c + dy) * VIEW + c + dx for dy, dx in MOVES]
        self.attack_cells: list[int] = [(c + dy) * VIEW + c + dx for dy, dx in ATTACKS]
        # each move's cell on the way (its destination for one-cell and diagonal moves)
        self.via_cells: list[int] = [(c + dy // 2) * VIEW + c + dx // 2
                                     if 2 in (abs(dy), abs(dx)) else (c + dy) * VIEW + c + dx
                                     for dy, dx in MOVES]
        self.stay = STAY

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        move, via, attack = (torch.tensor(cells, dtype=torch.long, device=obs.device)
                             for cells in (self.move_cells, self.via_cells, self.attack_cells))
        wall = obs[:, 0].flatten(1) > 0
        moves = ~(wall[:, move] | wall[:, via])
        moves[:, self.stay] = True
        enemy = obs[:, 3].flatten(1) > 0
        return torch.cat([moves, enemy[:, attack]], 1)

    def of_hwc(self, obs: np.ndarray) -> np.ndarray:
        """The same mask of numpy HWC observations (N, 13, 13, 5): 4x faster than ``forward``
        at a cycle's 162 rows, for acting and for the replay buffer's insertions."""
        flat = obs.reshape(len(obs), VIEW * VIEW, obs.shape[-1])
        wall = flat[:, :, 0] > 0
        moves = ~(wall[:, self.move_cells] | wall[:, self.via_cells])
        moves[:, self.stay] = True
        return np.concatenate([moves, flat[:, self.attack_cells, 3] > 0], 1)


def as_played(valid: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The action a transition is credited to under an action mask (``valid``: (N, 21)): one
    the mask rules out did what staying does (a move into a wall, an attack on no enemy)."""
    allowed = valid.gather(1, action.unsqueeze(1)).squeeze(1)
    return torch.where(allowed, action, torch.full_like(action, STAY))


def random_valid_actions(valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row, uniform over the row's ``True`` entries (exploration under a mask)."""
    return (rng.random(valid.shape) * valid).argmax(1)


class QNetwork(nn.Module):
    """The seed's Q-network: 3x3 convolutions (no padding) + ReLU, flatten, MLP to 21 values.

    The defaults are the report's: two convolutions of 5 channels, one hidden layer of 120.
    With no convolutions (``conv_channels=[]``) it is an MLP over the flattened view.
    ``dueling``: the last layer is a :class:`DuelingHead`. ``action_mask``: actions that can
    never do anything (:class:`ActionMask`) get the value ``MASKED``, so that greedy play and
    the TD target's max never pick them. ``channels``: the observation channels the network
    reads (all five by default; ``[0, 2, 4]``, walls and both teams' HP, says all the five do,
    since an agent is where its HP is, at 60% of the first layer's cost). It still takes all
    five channels.
    """

    # TorchScript compiles only the branches taken
    __constants__ = ["masked", "masked_value", "selects", "channels"]

    def __init__(self, conv_channels=(5, 5), hidden=(120,), n_actions: int = N_ACTIONS,
                 dueling: bool = False, action_mask: bool = False, channels=None):
        super().__init__()
        self.channels = list(range(IN_CHANNELS)) if channels is None else \
            [int(c) for c in channels]
        if not self.channels or any(not 0 <= c < IN_CHANNELS for c in self.channels):
            raise ValueError(f"algo.network.channels={list(channels)}: observation channels "
                             f"are 0..{IN_CHANNELS - 1}")
        self.selects = self.channels != list(range(IN_CHANNELS))
        convs, mlp, width = trunk_layers(conv_channels, hidden, in_channels=len(self.channels))
        self.cnn = nn.Sequential(*convs)
        self.head = nn.Sequential(*mlp, q_output(width, n_actions, dueling))
        self.masked, self.masked_value = bool(action_mask), MASKED
        self.valid_actions = ActionMask()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.selects:
            x = obs.index_select(1, torch.tensor(self.channels, dtype=torch.long,
                                                 device=obs.device))
        return self.q_from(x, self.valid_actions(obs) if self.masked else None)

    def q_from(self, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """Q from what the network reads: ``x`` (N, len(channels), 13, 13) and, masked, the
        actions the mask allows (N, 21). The learner takes both from its replay buffer, which
        stored them once per row instead of once per sampling."""
        q = self.head(self.cnn(x).flatten(1))
        if valid is not None:
            q = q.masked_fill(~valid, self.masked_value)
        return q


class CourseQNetwork(nn.Module):
    """The course's red agents: ``red.pt`` (ReLU, output ``network.4``) and ``red_final.pt``
    (Tanh after the 84-unit layer, output ``last_layer``). Same layer names as the files."""

    def __init__(self, final: bool):
        super().__init__()
        c = IN_CHANNELS
        self.cnn = nn.Sequential(nn.Conv2d(c, c, 3), nn.ReLU(), nn.Conv2d(c, c, 3), nn.ReLU())
        width = c * (VIEW - 4) ** 2
        if final:
            self.network = nn.Sequential(
                nn.Linear(width, 120), nn.ReLU(), nn.Linear(120, 84), nn.Tanh()
            )
            self.last_layer = nn.Linear(84, N_ACTIONS)
        else:
            self.network = nn.Sequential(
                nn.Linear(width, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                nn.Linear(84, N_ACTIONS),
            )
            self.last_layer = nn.Identity()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.network(self.cnn(obs).flatten(1)))


COURSE_KEYS = {
    "red.pt": {"cnn.0.weight", "cnn.2.weight", "network.0.weight", "network.2.weight",
               "network.4.weight"},
    "red_final.pt": {"cnn.0.weight", "cnn.2.weight", "network.0.weight", "network.2.weight",
                     "last_layer.weight"},
}


def course_format(state_dict: dict) -> str | None:
    """'red.pt' or 'red_final.pt' if the state dict has that file's layout, else None."""
    keys = set(state_dict)
    for name, needed in COURSE_KEYS.items():
        if needed <= keys:
            return name
    return None


def load_course_net(path: str | os.PathLike) -> CourseQNetwork:
    """Load ``red.pt`` or ``red_final.pt`` (state dicts saved on CUDA) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise PolicyLoadError(f"course opponent file not found: {path}")
    if is_torchscript(path):
        raise PolicyLoadError(f"{path} is an exported policy (TorchScript), not a course network "
                              f"(a state dict in the red.pt / red_final.pt format)")
    state = torch_load(path)
    fmt = course_format(state) if isinstance(state, dict) else None
    if fmt is None:
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise PolicyLoadError(
            f"{path} is not a course network: expected the keys of red.pt "
            f"(cnn.*, network.0/2/4.*) or red_final.pt (cnn.*, network.0/2.*, last_layer.*), "
            f"found {found}"
        )
    net = CourseQNetwork(final=fmt == "red_final.pt")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise PolicyLoadError(f"{path} has the {fmt} layout but wrong shapes: {_first_line(e)}")
    return net.eval()


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)


def build_q_network(network_cfg: dict) -> nn.Module:
    return QNetwork(**dict(network_cfg))


def load_policy(path: str | os.PathLike) -> nn.Module:
    """Any policy file battle-rl knows, as an eval-mode module on the CPU.

    Accepts an exported ``policy.pt`` (TorchScript), a Lightning checkpoint (``.ckpt``) of a
    battle-rl run, or a course state dict (``red.pt`` / ``red_final.pt`` format).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "policy.pt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return load_policy(candidate)
        raise PolicyLoadError(f"{path} is a directory with no policy.pt or checkpoints/last.ckpt")
    if not path.is_file():
        raise PolicyLoadError(f"checkpoint not found: {path}")
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise PolicyLoadError(f"{path} looks like TorchScript but cannot be loaded: "
                                  f"{_first_line(e)}") from None
    state = torch_load(path)
    if isinstance(state, dict) and "state_dict" in state and "hyper_parameters" in state:
        return q_network_from_checkpoint(state, path)
    if isinstance(state, dict) and course_format(state):
        return load_course_net(path)
    raise PolicyLoadError(
        f"{path} is neither a battle-rl policy.pt (TorchScript), a Lightning checkpoint of a "
        f"battle-rl run, nor a course network (red.pt / red_final.pt format)"
    )


def q_network_from_checkpoint(ckpt: dict, path: Path) -> nn.Module:
    hp = ckpt["hyper_parameters"]
    if "network" not in hp:
        raise PolicyLoadError(f"{path} is a Lightning checkpoint but not of a battle-rl run "
                              f"(no 'network' in its hyper-parameters)")
    from battle_rl.algos import policy_from_checkpoint

    return policy_from_checkpoint(ckpt, path).eval()


def export_policy(net: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``net`` as TorchScript (CPU, eval mode), atomically, and check it loads back."""
    path = Path(path)
    module = copy.deepcopy(net).cpu().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    scripted = torch.jit.script(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".policy-", suffix=".pt")
    os.close(fd)
    try:
        scripted.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """theta' <- tau * theta + (1 - tau) * theta', in place, for every parameter."""
    with torch.no_grad():
        t = list(target.parameters())
        torch._foreach_lerp_(t, list(online.parameters()), tau)


def net_device(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def q_values(net: nn.Module, obs_hwc: np.ndarray, agent_ids: np.ndarray | None = None,
             mean_action: np.ndarray | None = None) -> torch.Tensor:
    """Action values for a batch of HWC observations, (N, 13, 13, 5) -> (N, 21), one forward.

    ``agent_ids`` (N,) are passed as the second argument to networks that declare
    ``uses_agent_id`` (the agent network of VDN/QMIX), ``mean_action`` (N, 21) to networks
    that declare ``uses_mean_action`` (MF-Q); other networks get one argument.
    """
    # a contiguous NCHW copy: the forward, copy included, is about 15% faster on it than on
    # the channels-last view a bare permute gives (oneDNN picks other kernels), same values
    x = torch.from_numpy(obs_hwc).to(net_device(net)).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        if agent_ids is not None and getattr(net, "uses_agent_id", False):
            return net(x, torch.from_numpy(np.asarray(agent_ids, np.int64)).to(x.device))
        if mean_action is not None and getattr(net, "uses_mean_action", False):
            return net(x, torch.from_numpy(np.asarray(mean_action, np.float32)).to(x.device))
        return net(x)


def greedy_actions(net: nn.Module, obs_hwc: np.ndarray, alive: np.ndarray,
                   agent_ids: np.ndarray | None = None, mean_action: np.ndarray | None = None
                   ) -> np.ndarray:
    """argmax actions for the alive slots (one batched forward); 0 for dead slots.

    ``agent_ids`` (N,): each row's agent index (its slot), for networks that use it;
    ``mean_action`` (N, 21): each row's mean action, for MF-Q networks.
    """
    if alive.all():  # no gathering copy
        return q_values(net, obs_hwc, agent_ids, mean_action).argmax(1).cpu().numpy()
    actions = np.zeros(len(obs_hwc), np.int64)
    if alive.any():
        ids = None if agent_ids is None else np.asarray(agent_ids)[alive]
        mean = None if mean_action is None else np.asarray(mean_action)[alive]
        actions[alive] = q_values(net, obs_hwc[alive], ids, mean).argmax(1).cpu().numpy()
    return actions
