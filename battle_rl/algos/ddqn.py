"""DQN / Double DQN with a Q-network shared by all agents of the team (the seed's method).

Read top to bottom: the network pair, the TD target (Double-DQN or the report's plain max),
the Huber loss, AdamW with gradient-norm clipping, and the soft target update after every
optimisation step. Rollouts happen in ``battle_rl.data.RolloutDataset``. With an action mask
(``algo.network.action_mask``, the default run's) the network never values, and exploration
never draws, an action that can never do anything; a stored one (the other team's) is learned
as the stay it was. With ``hparams.explore_with=scripted`` (the default run's) an exploring
agent plays the scripted agent's move instead of a random one: off-policy data from real fights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from battle_rl.buffer import OBS_SCALE, ReplayBuffer
from battle_rl.data import EpsilonSchedule, RolloutDataset
from battle_rl.env import N_ACTIONS, OBS_SHAPE
from battle_rl.league.opponents import ScriptedOpponent
from battle_rl.networks import (as_played, build_q_network, greedy_actions, net_device,
                                random_valid_actions, soft_update)
from battle_rl.resume import load_rollout_state, save_rollout_state


def exploration_guide(name: str):
    """The policy exploring agents follow: ``random`` (None: the learner's random actions) or
    ``scripted`` (the scripted agent, advancing as the learner's side, blue, does)."""
    if name == "random":
        return None
    if name == "scripted":
        return ScriptedOpponent(advance_dx=-1)
    raise ValueError(f"hparams.explore_with={name}: choose random or scripted")


def td_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None,
    gamma: float | torch.Tensor,
) -> torch.Tensor:
    """r + gamma * (1 - done) * Q'(s', a*) (``gamma``: a number, or gamma^n per sample for
    n-step returns).

    Double DQN: a* = argmax_a Q(s', a) of the online network, valued by the target network.
    Plain (the report's formula): a* = argmax_a Q'(s', a), i.e. max of the target network.
    """
    if next_q_online is None:
        next_value = next_q_target.max(1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(1, keepdim=True)).squeeze(1)
    return reward + gamma * (1.0 - done.float()) * next_value


class DQN(pl.LightningModule):
    build_network = staticmethod(build_q_network)  # network config -> the Q-network

    def __init__(
        self,
        name: str = "ddqn",
        double: bool = True,
        network: dict | None = None,
        gamma: float = 0.9,
        lr: float = 1e-4,
        tau: float = 0.005,
        weight_decay: float = 0.01,
        max_grad_norm: float = 10.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.q_net = self.build_network(network or {})
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.rollout = None  # the RolloutDataset feeding this module, for logging its counters

    # -- the algorithm interface (see battle_rl.algos) ---------------------------------
    def make_dataset(self, env, opponent, hparams, seed: int) -> RolloutDataset:
        """Per-agent transitions of the whole team (both teams with ``hparams.both_teams``)
        into one replay buffer."""
        both = bool(hparams.get("both_teams", False))
        return self.dataset_class(
            env=env,
            opponent=opponent,
            learner=self,
            buffer=self.make_buffer(hparams, env.n_agents * (2 if both else 1), env.n_agents,
                                    seed),
            batch_size=hparams.batch_size,
            epsilon=EpsilonSchedule(**hparams.epsilon),
            updates_per_cycle=hparams.updates_per_cycle,
            warmup=hparams.warmup,
            max_episodes=hparams.episodes,
            seed=seed,
            both_teams=both,
            flip_y=bool(hparams.get("flip_y", False)),
            red_share=float(hparams.get("red_share", 0.0)),
            guide=exploration_guide(hparams.get("explore_with", "random")),
        )

    dataset_class = RolloutDataset  # the rollout stream (MF-Q: with the mean actions)

    def make_buffer(self, hparams, slots: int, team_size: int, seed: int) -> ReplayBuffer:
        """The replay of ``slots`` agent slots (two teams with ``both_teams``), keeping only
        the channels the network reads and, masked, each row's action mask."""
        masked = getattr(self.q_net, "masked", False)
        return ReplayBuffer(hparams.buffer_size, slots, seed=seed,
                            n_step=hparams.get("n_step", 1), gamma=self.hparams.gamma,
                            channels=getattr(self.q_net, "channels", None),
                            valid_actions=self.stored_valid_actions if masked else None)

    def stored_valid_actions(self, obs_u8: np.ndarray) -> np.ndarray:
        """The mask of stored (uint8 HWC) observations: the same as of their float values,
        since the mask only asks which cells are above 0."""
        return self.q_net.valid_actions.of_hwc(obs_u8)

    @classmethod
    def policy_from_checkpoint(cls, ckpt: dict) -> torch.nn.Module:
        net = cls.build_network(ckpt["hyper_parameters"]["network"])
        prefix = "q_net."
        net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith(prefix)})
        return net

    def greedy(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """argmax actions for the alive slots, 0 for dead ones: ``greedy_actions``' values,
        but only the channels the network reads are copied to NCHW (2x faster at 81 rows)."""
        net = self.q_net
        if not hasattr(net, "q_from"):
            return greedy_actions(net, obs, alive)
        actions = np.zeros(len(obs), np.int64)
        if alive.any():
            obs, device = obs if alive.all() else obs[alive], net_device(net)
            x = torch.from_numpy(obs).to(device).permute(0, 3, 1, 2)
            with torch.inference_mode():
                valid = torch.from_numpy(net.valid_actions.of_hwc(obs)).to(device) \
                    if net.masked else None
                q = net.q_from(x[:, net.channels].contiguous(), valid)
            actions[alive] = q.argmax(1).cpu().numpy()
        return actions

    def random_actions(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exploration: uniform over the actions the network's mask allows (all without one)."""
        if not getattr(self.q_net, "masked", False):
            return rng.integers(0, N_ACTIONS, len(obs))
        x = torch.from_numpy(obs).permute(0, 3, 1, 2)
        return random_valid_actions(self.q_net.valid_actions(x).numpy(), rng)

    def policy_net(self) -> torch.nn.Module:
        return self.q_net

    def start_from(self, state_dict: dict) -> None:
        self.q_net.load_state_dict(state_dict)
        self.target_net.load_state_dict(state_dict)

    # -- learning -------------------------------------------------------------------
    @staticmethod
    def preprocess(obs_u8: torch.Tensor) -> torch.Tensor:
        """Stored uint8 HWC observations -> float NCHW."""
        return obs_u8.permute(0, 3, 1, 2).float().div_(OBS_SCALE)

    def as_played(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The stored actions, those a masked network rules out (the other team's, a random
        opponent's) taken as the stay they amounted to."""
        if not getattr(self.q_net, "masked", False):
            return action
        return as_played(self.q_net.valid_actions(obs), action)

    def network_input(self, obs_u8: torch.Tensor, valid: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored uint8 observations -> what ``q_net.q_from`` reads: the network's channels
        as float NCHW, and its action mask. The buffer stored both once per row, as the network
        reads them (channels first); whole HWC observations without masks (a batch made by
        hand) get them here. Under bfloat16 autocast the input is made bfloat16 at once: the
        same values as float32 then autocast's cast (every uint8 / 100 is checked in tests),
        one copy fewer."""
        net, x = self.q_net, obs_u8
        if x.shape[1:] == OBS_SHAPE:  # whole observations
            x = x.permute(0, 3, 1, 2)
            if valid is None and getattr(net, "masked", False):
                valid = net.valid_actions(x)
            x = x[:, net.channels]
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) \
            else torch.float32
        if dtype != torch.bfloat16:
            dtype = torch.float32
        return x.to(dtype, memory_format=torch.contiguous_format).div_(OBS_SCALE), valid

    def td_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Huber loss between Q(s, a) and the TD target; also returns Q(s, a)."""
        hp = self.hparams
        obs, valid = self.network_input(batch["obs"], batch.get("valid"))
        next_obs, next_valid = self.network_input(batch["next_obs"], batch.get("next_valid"))
        action = batch["action"] if valid is None else as_played(valid, batch["action"])
        q = self.q_net.q_from(obs, valid).gather(1, action.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_online = self.q_net.q_from(next_obs, next_valid) if hp.double else None
            target = td_target(
                batch["reward"], batch["done"], self.target_net.q_from(next_obs, next_valid),
                next_online, batch.get("discount", hp.gamma),
            )
        return F.smooth_l1_loss(q, target), q

    def training_step(self, batch, batch_idx):
        loss, q = self.td_loss(batch)
        if not bool(torch.isfinite(loss) & torch.isfinite(q).all()):
            raise FloatingPointError(
                f"non-finite TD loss or Q value (loss={loss.item()}) at step {self.global_step}: "
                f"training stopped, the last good checkpoint is kept; lower hparams.lr or "
                f"check the reward settings"
            )
        if self._logs_this_step():
            self._log_step(loss, q)
        return loss

    def _logs_this_step(self) -> bool:
        """Build metrics only on the steps Lightning writes (every trainer.log_every_n_steps)."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def _log_step(self, loss: torch.Tensor, q: torch.Tensor) -> None:
        metrics = {"train/td_loss": loss.detach(), "train/q_mean": q.detach().mean()}
        if self.rollout is not None:
            metrics.update(self.rollout.log_metrics())
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(q))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        soft_update(self.target_net, self.q_net, self.hparams.tau)

    def on_train_epoch_end(self):
        # the stream ends an "epoch" only when its episode budget is spent: then stop
        if self.rollout is not None and self.rollout.finished:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        # fused: one kernel over all parameters, 2.5x faster than a dozen small ops for each;
        # not under float16's gradient scaler (16-mixed), which it would unscale inside the step
        scaled = self._trainer is not None and str(self._trainer.precision).startswith("16")
        return torch.optim.AdamW(
            self.q_net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
            fused=not scaled,
        )

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        # torch's clipping, as Lightning's does it (its own refuses a fused optimizer under
        # mixed precision for the scaler's sake: bfloat16 has none, 16-mixed gets no fused)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # foreach: one norm over all gradients (torch picks it on GPUs only), half the time
        torch.nn.utils.clip_grad_norm_(params, self.hparams.max_grad_norm, foreach=True)

    # -- checkpoints carry the rollout's counters (epsilon position) and the RNGs ---------
    def on_save_checkpoint(self, checkpoint):
        save_rollout_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        load_rollout_state(self, checkpoint)
