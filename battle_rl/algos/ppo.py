"""PPO for the team with parameter sharing: IPPO and MAPPO (Yu et al., NeurIPS 2022).

One actor, shared by every agent of the team, is the seed's network (3x3 convolutions, an MLP,
21 logits); it is what ``policy.pt`` exports (greedy play: the argmax of its logits). The
critic is separate: IPPO's sees the agent's own observation; MAPPO's sees the global state
(45x45x5, through strided convolutions as QMIX's hypernetworks) beside the agent's own
observation, which tells it which agent's value is asked for.

Read top to bottom: the critics, acting (actions sampled by Gumbel-max from the dataset's
random generator, so that a resumed run draws the same actions), the clipped surrogate
objective with normalised advantages, the (optionally clipped) value loss and the entropy
bonus, Adam with each network's gradient norm clipped on its own. Rollouts, GAE and the
minibatches happen in ``battle_rl.data.OnPolicyDataset``: one ``training_step`` per minibatch
(Lightning's automatic optimisation), ``epochs x minibatches`` of them per rollout.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from battle_rl.data import OnPolicyDataset
from battle_rl.networks import build_q_network, greedy_actions, trunk_layers
from battle_rl.resume import load_rollout_state, save_rollout_state


class LocalCritic(nn.Module):
    """IPPO: V(o_i), the seed's trunk over the agent's own observation."""

    uses_state = False

    def __init__(self, conv_channels=(5, 5), hidden=(120,)):
        super().__init__()
        convs, mlp, width = trunk_layers(conv_channels, hidden)
        self.body = nn.Sequential(*convs, nn.Flatten(), *mlp)
        self.head = nn.Linear(width, 1)

    def forward(self, obs, state=None, state_index=None):
        return self.head(self.body(obs)).squeeze(1)


class CentralCritic(nn.Module):
    """MAPPO: V(s, o_i), the global state (strided convolutions, a fully connected layer)
    joined with the agent's own observation (the seed's trunk), then a linear value head."""

    uses_state = True

    def __init__(self, conv_channels=(5, 5), hidden=(120,), state_channels=(16, 16),
                 state_hidden: int = 64, map_size: int = 45):
        super().__init__()
        convs, mlp, width = trunk_layers(conv_channels, hidden)
        self.body = nn.Sequential(*convs, nn.Flatten(), *mlp)
        layers, c, size = [], 5, map_size
        for out in state_channels:  # stride 2: the 45x45 map shrinks to 10x10 in two steps
            layers += [nn.Conv2d(c, out, 3, stride=2), nn.ReLU()]
            c, size = out, (size - 3) // 2 + 1
        layers += [nn.Flatten(), nn.Linear(c * size * size, state_hidden), nn.ReLU()]
        self.state_net = nn.Sequential(*layers)
        self.head = nn.Linear(width + state_hidden, 1)

    def forward(self, obs, state, state_index):
        """``state`` (S, 5, H, W): the distinct states of the batch, once each;
        ``state_index`` (M,): each observation's state."""
        z = self.state_net(state)[state_index]
        return self.head(torch.cat([self.body(obs), z], 1)).squeeze(1)


class PPO(pl.LightningModule):
    # the keys of the run's hparams group this learner takes (training.make_module)
    HPARAMS = ("gamma", "lr", "max_grad_norm", "clip", "clip_vloss", "norm_adv", "ent_coef",
               "vf_coef")

    def __init__(
        self,
        name: str = "ippo",
        critic: str = "local",
        network: dict | None = None,
        critic_net: dict | None = None,
        map_size: int = 45,
        gamma: float = 0.99,
        lr: float = 2e-3,
        max_grad_norm: float = 0.5,
        clip: float = 0.2,
        clip_vloss: bool = True,
        norm_adv: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
    ):
        super().__init__()
        if critic not in ("local", "central"):
            raise ValueError(f"algo.critic={critic!r}: one of 'local' (IPPO), 'central' (MAPPO)")
        self.save_hyperparameters()
        self.actor = build_q_network(network or {})
        with torch.no_grad():  # a near-uniform policy to start from (as CleanRL)
            last = self.actor.head[-1]
            nn.init.orthogonal_(last.weight, 0.01)
            nn.init.zeros_(last.bias)
        if critic == "central":
            self.critic = CentralCritic(map_size=map_size, **dict(critic_net or {}))
        else:
            self.critic = LocalCritic(**dict(critic_net or {}))
        self.rollout = None  # the OnPolicyDataset feeding this module

    # -- the algorithm interface (see battle_rl.algos) ---------------------------------
    dataset_class = OnPolicyDataset  # on-policy rollouts, served as minibatches

    def make_dataset(self, env, opponent, hparams, seed: int) -> OnPolicyDataset:
        return self.dataset_class(
            env=env, opponent=opponent, learner=self,
            rollout_cycles=hparams.rollout_cycles, epochs=hparams.epochs,
            minibatches=hparams.minibatches, gamma=hparams.gamma,
            gae_lambda=hparams.gae_lambda, use_state=self.critic.uses_state,
            max_episodes=hparams.get("episodes"), seed=seed,
        )

    @classmethod
    def policy_from_checkpoint(cls, ckpt: dict) -> torch.nn.Module:
        net = build_q_network(ckpt["hyper_parameters"].get("network") or {})
        prefix = "actor."
        net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith(prefix)})
        return net

    def greedy(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        return greedy_actions(self.actor, obs, alive)

    def policy_net(self) -> torch.nn.Module:
        return self.actor

    def start_from(self, state_dict: dict) -> None:
        self.actor.load_state_dict(state_dict)  # the critic starts fresh

    # -- acting (called by the dataset, one batched forward for the team) ---------------
    def _inputs(self, obs: np.ndarray, alive: np.ndarray, state: np.ndarray | None):
        x = torch.from_numpy(obs[alive]).to(self.device).permute(0, 3, 1, 2).contiguous()
        if state is None:
            return x, None, None
        s = torch.from_numpy(state).to(self.device).permute(2, 0, 1).unsqueeze(0)
        return x, s, torch.zeros(len(x), dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def act(self, obs, alive, state, rng: np.random.Generator):
        """Sampled actions, their log-probabilities and the values, (N,) each (0 where dead)."""
        n = len(obs)
        actions, logp, values = np.zeros(n, np.int64), np.zeros(n, np.float32), \
            np.zeros(n, np.float32)
        if not alive.any():
            return actions, logp, values
        x, s, idx = self._inputs(obs, alive, state)
        log_probs = F.log_softmax(self.actor(x), 1).cpu().numpy()
        # Gumbel-max: argmax(log p + Gumbel noise) is a sample of the policy
        a = np.argmax(log_probs + rng.gumbel(size=log_probs.shape), 1)
        actions[alive] = a
        logp[alive] = log_probs[np.arange(len(a)), a]
        values[alive] = self.critic(x, s, idx).cpu().numpy()
        return actions, logp, values

    @torch.inference_mode()
    def values(self, obs, alive, state) -> np.ndarray:
        values = np.zeros(len(obs), np.float32)
        if alive.any():
            values[alive] = self.critic(*self._inputs(obs, alive, state)).cpu().numpy()
        return values

    # -- learning -------------------------------------------------------------------
    def ppo_loss(self, batch) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        logits = self.actor(batch["obs"])
        log_probs = F.log_softmax(logits, 1)
        logp = log_probs.gather(1, batch["action"].unsqueeze(1)).squeeze(1)
        entropy = -(log_probs.exp() * log_probs).sum(1).mean()
        log_ratio = logp - batch["logp"]
        ratio = log_ratio.exp()

        adv = batch["adv"]
        if hp.norm_adv and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        # the clipped surrogate objective, as a loss
        policy_loss = torch.max(-adv * ratio,
                                -adv * ratio.clamp(1 - hp.clip, 1 + hp.clip)).mean()

        value = self.critic(batch["obs"], batch.get("state"), batch.get("state_index"))
        ret, old = batch["ret"], batch["value"]
        if hp.clip_vloss:  # do not move a value further than clip from the one that acted
            clipped = old + (value - old).clamp(-hp.clip, hp.clip)
            value_loss = 0.5 * torch.max((value - ret) ** 2, (clipped - ret) ** 2).mean()
        else:
            value_loss = 0.5 * ((value - ret) ** 2).mean()

        loss = policy_loss - hp.ent_coef * entropy + hp.vf_coef * value_loss
        with torch.no_grad():
            stats = {"train/policy_loss": policy_loss, "train/value_loss": value_loss,
                     "train/entropy": entropy, "train/value_mean": value.mean(),
                     "train/approx_kl": ((ratio - 1) - log_ratio).mean(),
                     "train/clip_fraction": ((ratio - 1).abs() > hp.clip).float().mean()}
        return loss, stats

    def training_step(self, batch, batch_idx):
        loss, stats = self.ppo_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite PPO loss ({loss.item()}) at step {self.global_step}: training "
                f"stopped, the last good checkpoint is kept; lower hparams.lr or check the "
                f"reward settings")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # Lightning writes
            metrics = {k: v.detach() for k, v in stats.items()}
            if self.rollout is not None:
                metrics.update(self.rollout.log_metrics())
            self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch["obs"]))
        return loss

    def on_train_epoch_end(self):
        if self.rollout is not None and self.rollout.finished:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, eps=1e-5)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        # each network on its own: the value loss (returns of tens) would otherwise own the
        # joint norm and shrink the actor's step
        for net in (self.actor, self.critic):
            nn.utils.clip_grad_norm_(net.parameters(), self.hparams.max_grad_norm)

    # -- checkpoints carry the rollout's counters and the RNGs (not the rollout itself: a
    # resumed run starts a new one), every DDP rank's (battle_rl.resume) ----------------------
    def on_save_checkpoint(self, checkpoint):
        save_rollout_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        load_rollout_state(self, checkpoint)
