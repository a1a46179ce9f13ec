"""QMIX and VDN: one agent network shared by the team (with an agent-id embedding), whose
chosen-action values are mixed into a team value Q_tot and trained on team steps.

Read top to bottom: the agent values of a batch of team steps (one forward over every alive
agent of every sampled step), Q_tot by the mixer (VDN: sum; QMIX: monotonic hypernetwork mixer
over the global state), the TD target r + gamma * (1 - done) * Q_tot'(s', a*) with a* chosen
per agent by the online network (Double-Q) or the target network, Huber loss, AdamW with
gradient-norm clipping, soft target updates of the agent network and the mixer after every
optimisation step. Dead slots are masked everywhere: they are not evaluated, and the mixers
ignore them. Rollouts happen in ``battle_rl.data.TeamRolloutDataset``.

``agent_loss`` > 0 adds each agent's own TD error (its reward, its next value) to the team's,
weighted by it (individual rewards assisting the team objective, as in IRAT, Wang et al.
2022). Why: one team TD error, shared by 81 agents, is mostly other agents' noise for any one
of them (benchmarks/credit_noise.py measured it); the agent's own error says what its action
did. Under VDN with ``team_reward: sum`` both losses have the same solution (the team return
is the sum of the agents' returns); under QMIX the team term still shapes the mixer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from battle_rl.buffer import OBS_SCALE
from battle_rl.data import EpsilonSchedule, TeamRolloutDataset
from battle_rl.mixing import AgentQNetwork, build_mixer
from battle_rl.networks import greedy_actions, soft_update
from battle_rl.resume import load_rollout_state, save_rollout_state


class QMIX(pl.LightningModule):
    def __init__(
        self,
        name: str = "qmix",
        mixer: str = "qmix",
        double: bool = True,
        network: dict | None = None,
        mixer_net: dict | None = None,
        team_reward: str = "sum",
        agent_loss: float = 0.0,
        n_agents: int = 81,
        state_shape: tuple = (45, 45, 5),
        gamma: float = 0.9,
        lr: float = 1e-3,
        tau: float = 0.01,
        weight_decay: float = 0.01,
        max_grad_norm: float = 10.0,
        log_every: int = 50,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.agent_net = AgentQNetwork(n_agents, **dict(network or {}))
        self.mixer = build_mixer(mixer, n_agents, state_shape,
                                 **(dict(mixer_net or {}) if mixer == "qmix" else {}))
        self.target_agent = copy.deepcopy(self.agent_net).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.slots = np.arange(n_agents)
        self.rollout = None

    # -- the algorithm interface (see battle_rl.algos) ---------------------------------
    dataset_class = TeamRolloutDataset  # the rollout stream of whole team steps

    def make_dataset(self, env, opponent, hparams, seed: int) -> TeamRolloutDataset:
        """Team steps (state, joint observation, joint action, ...) into one team buffer."""
        if env.n_agents != self.hparams.n_agents:
            raise ValueError(f"the game has {env.n_agents} agents per team, the networks "
                             f"were built for algo.n_agents={self.hparams.n_agents}")
        return self.dataset_class(
            env=env,
            opponent=opponent,
            learner=self,
            capacity=hparams.buffer_size,
            batch_size=hparams.batch_size,
            epsilon=EpsilonSchedule(**hparams.epsilon),
            team_reward=self.hparams.team_reward,
            updates_per_cycle=hparams.updates_per_cycle,
            warmup=hparams.warmup,
            max_episodes=hparams.episodes,
            seed=seed,
        )

    @classmethod
    def policy_from_checkpoint(cls, ckpt: dict) -> torch.nn.Module:
        hp = ckpt["hyper_parameters"]
        net = AgentQNetwork(hp.get("n_agents", 81), **dict(hp.get("network") or {}))
        prefix = "agent_net."
        net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith(prefix)})
        return net

    def greedy(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        return greedy_actions(self.agent_net, obs, alive, self.slots[: len(obs)])

    def policy_net(self) -> torch.nn.Module:
        return self.agent_net

    def start_from(self, state_dict: dict) -> None:
        self.agent_net.load_state_dict(state_dict)  # the mixer starts fresh
        self.target_agent.load_state_dict(state_dict)

    # -- learning -------------------------------------------------------------------
    @staticmethod
    def preprocess(x_u8: torch.Tensor) -> torch.Tensor:
        """Stored uint8 HWC (observations or states) -> float NCHW."""
        return x_u8.permute(0, 3, 1, 2).float().div_(OBS_SCALE)

    def agent_values(self, net, obs_u8: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """(M, 21) action values of the M alive agents of a batch of team steps, in the
        row-major order of ``alive`` (B, N): one forward for all of them."""
        step, slot = alive.nonzero(as_tuple=True)
        return net(self.preprocess(obs_u8[step, slot]), slot)

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        alive, next_alive = batch["alive"], batch["next_alive"]
        use_state = self.mixer.uses_state
        state = self.preprocess(batch["state"]) if use_state else None
        next_state = self.preprocess(batch["next_state"]) if use_state else None

        q_alive = self.agent_values(self.agent_net, batch["obs"], alive)
        chosen = q_alive.new_zeros(alive.shape)
        chosen[alive] = q_alive.gather(1, batch["action"][alive].unsqueeze(1)).squeeze(1)
        q_tot = self.mixer(chosen, alive, state)

        with torch.no_grad():
            next_target = self.agent_values(self.target_agent, batch["next_obs"], next_alive)
            if hp.double:  # a* by the online network, valued by the target network
                best = self.agent_values(self.agent_net, batch["next_obs"], next_alive).argmax(1)
            else:
                best = next_target.argmax(1)
            next_chosen = next_target.new_zeros(next_alive.shape)
            next_chosen[next_alive] = next_target.gather(1, best.unsqueeze(1)).squeeze(1)
            next_tot = self.target_mixer(next_chosen, next_alive, next_state)
            target = batch["reward"] + hp.gamma * (1.0 - batch["done"].float()) * next_tot

        loss = team_loss = F.smooth_l1_loss(q_tot, target)
        if hp.agent_loss > 0:  # each agent's own TD error; a dead next slot is terminal for it
            agent_target = (batch["agent_reward"]
                            + hp.gamma * (1.0 - batch["done"].float())[:, None] * next_chosen)
            # summed over the agents, averaged over team steps: with weight 1 an agent's own
            # error moves its value as much as the team's error does
            agent = F.smooth_l1_loss(chosen[alive], agent_target[alive], reduction="sum")
            loss = loss + hp.agent_loss * agent / len(alive)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite TD loss ({loss.item()}) at step {self.global_step}: lower the "
                f"learning rate or check the reward settings; the last checkpoint is kept"
            )
        if self.global_step % hp.log_every == 0:
            self._log_step(loss, team_loss, q_tot, q_alive)
        return loss

    def _log_step(self, loss, team_loss, q_tot, q_alive) -> None:
        # q_mean is the team value Q_tot, as DDQN's q_mean is its per-agent value
        metrics = {"train/td_loss": loss.detach(), "train/team_td_loss": team_loss.detach(),
                   "train/q_mean": q_tot.detach().mean(),
                   "train/agent_q_max": q_alive.detach().max(1).values.mean()}
        if self.rollout is not None:
            metrics.update(self.rollout.log_metrics())
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(q_tot))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        soft_update(self.target_agent, self.agent_net, self.hparams.tau)
        if any(True for _ in self.mixer.parameters()):
            soft_update(self.target_mixer, self.mixer, self.hparams.tau)

    def configure_optimizers(self):
        params = list(self.agent_net.parameters()) + list(self.mixer.parameters())
        return torch.optim.AdamW(params, lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, self.hparams.max_grad_norm, "norm")

    # -- checkpoints carry the rollout's counters (epsilon position) and the RNGs -------
    def on_save_checkpoint(self, checkpoint):
        save_rollout_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        load_rollout_state(self, checkpoint)
