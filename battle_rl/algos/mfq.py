"""Mean-field Q-learning (MF-Q, Yang et al., "Mean Field Multi-Agent Reinforcement Learning",
ICML 2018): each agent's Q-function also takes the mean action ā of its neighbours,
Q(o_j, a_j, ā_j), one network shared by the team.

Read top to bottom: the network pair (:class:`~battle_rl.mean_field.MeanFieldQNetwork`, the
seed's trunk with ā joined after the convolutions), the mean-field TD target

    y = r + gamma * (1 - done) * v(s'),   v(s') = sum_a pi(a | s', ā') Q'(s', a, ā'),
    pi(a | s', ā') = exp(Q(s', a, ā') / T) / Z,

with ā' the mean action at the next cycle (stored in the replay with each row), pi the
Boltzmann policy of the online network at temperature ``T`` (``algo.temperature``) and Q' the
target network; the Huber loss, AdamW with gradient-norm clipping and the soft target update
are DQN's (this class extends :class:`~battle_rl.algos.ddqn.DQN`). As T -> 0 the target becomes
Double DQN's (the online argmax valued by the target network).

Neighbours are the whole team (see ``battle_rl.mean_field``); the agents act epsilon-greedily
on Q(o, ·, ā), as every learner of this framework (the paper acts with the Boltzmann policy):
the epsilon schedule of ``hparams`` applies unchanged. Rollouts happen in
``battle_rl.data.MeanFieldRolloutDataset``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from battle_rl.algos.ddqn import DQN
from battle_rl.buffer import MeanActionReplayBuffer
from battle_rl.data import MeanFieldRolloutDataset
from battle_rl.mean_field import build_mean_field_network, rows_mean_action
from battle_rl.networks import greedy_actions


def mean_field_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor,
    gamma: float | torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """r + gamma * (1 - done) * sum_a softmax(Q(s', ., ā') / T)[a] * Q'(s', a, ā')."""
    pi = torch.softmax(next_q_online / temperature, dim=1)
    next_value = (pi * next_q_target).sum(1)
    return reward + gamma * (1.0 - done.float()) * next_value


class MFQ(DQN):
    build_network = staticmethod(build_mean_field_network)

    def __init__(
        self,
        name: str = "mfq",
        network: dict | None = None,
        temperature: float = 0.1,
        gamma: float = 0.9,
        lr: float = 1e-4,
        tau: float = 0.005,
        weight_decay: float = 0.01,
        max_grad_norm: float = 10.0,
    ):
        if not temperature > 0:
            raise ValueError(f"algo.temperature={temperature}: the Boltzmann temperature must "
                             f"be > 0")
        super().__init__(name=name, double=True, network=network, gamma=gamma, lr=lr, tau=tau,
                         weight_decay=weight_decay, max_grad_norm=max_grad_norm)

    # -- the algorithm interface (see battle_rl.algos) ---------------------------------
    # DQN's make_dataset, with each row's mean action stored (both teams with ``both_teams``:
    # each team's rows get their own team's mean action, the other team's mirrored)
    dataset_class = MeanFieldRolloutDataset

    def make_buffer(self, hparams, slots: int, team_size: int,
                    seed: int) -> MeanActionReplayBuffer:
        return MeanActionReplayBuffer(hparams.buffer_size, slots, team_size, seed=seed,
                                      n_step=hparams.get("n_step", 1), gamma=self.hparams.gamma)

    def greedy(self, obs: np.ndarray, alive: np.ndarray,
               mean_action: np.ndarray | None = None) -> np.ndarray:
        """argmax_a Q(o, a, ā) for a team; ``mean_action`` (21,) is the team's at the
        previous cycle (None: the first cycle, zeros)."""
        return greedy_actions(self.q_net, obs, alive,
                              mean_action=rows_mean_action(mean_action, len(obs)))

    # -- learning -------------------------------------------------------------------
    def td_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Huber loss between Q(s, a, ā) and the mean-field target; also returns Q(s, a, ā)."""
        hp = self.hparams
        obs, next_obs = self.preprocess(batch["obs"]), self.preprocess(batch["next_obs"])
        mean, next_mean = batch["mean_action"], batch["next_mean_action"]
        q = self.q_net(obs, mean).gather(1, self.as_played(obs, batch["action"]).unsqueeze(1))
        q = q.squeeze(1)
        with torch.no_grad():
            target = mean_field_target(
                batch["reward"], batch["done"], self.target_net(next_obs, next_mean),
                self.q_net(next_obs, next_mean), batch.get("discount", hp.gamma),
                hp.temperature,
            )
        return F.smooth_l1_loss(q, target), q
