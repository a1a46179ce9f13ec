"""Value factorisation for a team: the agent network with an agent-id embedding, and mixers.

- :class:`AgentQNetwork`: the seed's CNN trunk over one agent's observation, joined with a
  learned embedding of the agent's id (one-hot -> FC, i.e. an embedding lookup), then a linear
  layer to the 21 action values. It maps ``(N, 5, 13, 13)`` float observations and optional
  agent ids ``(N,)`` (LongTensor, the agent's slot 0..80) to ``(N, 21)``. Without ids it uses
  the *mean* of all agents' embeddings (an "average agent"), so a single-argument call, as any
  DDQN policy gets, still works.
- :class:`VDNMixer`: Q_tot = the sum of the alive agents' chosen values.
- :class:`QMixer`: Q_tot = w2 . ELU(w1^T q + b1) + V(s), with w1, b1, w2, V produced from the
  global state (45x45x5) by hypernetworks: two strided convolutions + ReLU, a fully connected
  layer, then one head each. |w1| and |w2| (absolute values, as EPyMARL) make Q_tot monotonic
  in every agent's value; V(s) is the state-dependent final bias.

Mixers take ``q (B, N)``, ``alive (B, N)`` bool and ``state (B, 5, H, W)`` float and return
``(B,)``. Dead slots are replaced by 0 before mixing: their rows of w1 then contribute nothing,
so whatever a dead slot holds cannot change Q_tot.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from battle_rl.env import N_ACTIONS
from battle_rl.networks import trunk_layers


class AgentQNetwork(nn.Module):
    def __init__(self, n_agents: int = 81, conv_channels=(5, 5), hidden=(120,),
                 id_embedding: int = 16, n_actions: int = N_ACTIONS):
        super().__init__()
        convs, mlp, width = trunk_layers(conv_channels, hidden)
        self.body = nn.Sequential(*convs, nn.Flatten(), *mlp)
        self.n_agents, self.id_dim = n_agents, id_embedding
        # the evaluator passes slot ids to policies that declare they use them
        self.uses_agent_id = id_embedding > 0
        self.id_embed = nn.Embedding(n_agents, max(id_embedding, 1))
        nn.init.zeros_(self.id_embed.weight)  # start as one shared network; ids differentiate
        self.head = nn.Linear(width + id_embedding, n_actions)

    def forward(self, obs: torch.Tensor, agent_id: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.body(obs)
        if self.id_dim > 0:
            if agent_id is None:  # no ids given: the average agent
                e = self.id_embed.weight.mean(0).unsqueeze(0).expand(h.shape[0], -1)
            else:
                e = self.id_embed(agent_id)
            h = torch.cat([h, e], 1)
        return self.head(h)


class VDNMixer(nn.Module):
    uses_state = False

    def forward(self, q: torch.Tensor, alive: torch.Tensor, state: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        return torch.where(alive, q, torch.zeros_like(q)).sum(1)


class QMixer(nn.Module):
    uses_state = True

    def __init__(self, n_agents: int = 81, state_shape=(45, 45, 5), embed: int = 32,
                 hyper_hidden: int = 64, conv_channels=(16, 16)):
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        layers, c, size = [], state_shape[2], state_shape[0]
        for out in conv_channels:  # stride 2: the 45x45 map shrinks to 10x10 in two steps
            layers += [nn.Conv2d(c, out, 3, stride=2), nn.ReLU()]
            c, size = out, (size - 3) // 2 + 1
        layers += [nn.Flatten(), nn.Linear(c * size * size, hyper_hidden), nn.ReLU()]
        self.state_net = nn.Sequential(*layers)
        self.hyper_w1 = nn.Linear(hyper_hidden, n_agents * embed)
        self.hyper_b1 = nn.Linear(hyper_hidden, embed)
        self.hyper_w2 = nn.Linear(hyper_hidden, embed)
        self.hyper_v = nn.Sequential(nn.Linear(hyper_hidden, embed), nn.ReLU(),
                                     nn.Linear(embed, 1))

    def forward(self, q: torch.Tensor, alive: torch.Tensor, state: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        assert state is not None
        b = q.shape[0]
        q = torch.where(alive, q, torch.zeros_like(q))
        z = self.state_net(state)
        w1 = self.hyper_w1(z).abs().view(b, self.n_agents, self.embed)
        hidden = F.elu(torch.bmm(q.unsqueeze(1), w1).squeeze(1) + self.hyper_b1(z))
        w2 = self.hyper_w2(z).abs()
        return (hidden * w2).sum(1) + self.hyper_v(z).squeeze(1)


def build_mixer(kind: str, n_agents: int, state_shape, **cfg) -> nn.Module:
    if kind == "vdn":
        return VDNMixer()
    if kind == "qmix":
        return QMixer(n_agents, tuple(state_shape), **cfg)
    raise ValueError(f"unknown mixer '{kind}' (choose from: qmix, vdn)")
