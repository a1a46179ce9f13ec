"""Algorithms: one LightningModule per family, all behind the same small interface.

A learner module has:
- ``make_dataset(env, opponent, hparams, seed)``: the rollout stream (and replay storage) it
  learns from; the training task hands it to Lightning as the train loader;
- ``greedy(obs, alive) -> actions``: batched greedy actions for a team (rollouts, evaluation;
  MF-Q's also takes the team's mean action);
- ``policy_net()``: the network exported as ``policy.pt`` ((N, 5, 13, 13) -> (N, 21): action
  values, or a policy's logits; greedy play takes the argmax either way; VDN/QMIX and MF-Q
  networks take an optional second input, see ``networks.q_values``);
- ``start_from(state_dict)``: that network, and its target, set to given weights
  (``init_from=``: fine-tuning a trained policy);
- ``policy_from_checkpoint(ckpt)`` (classmethod): that network rebuilt from a Lightning
  checkpoint, so ``evaluate.py`` accepts ``.ckpt`` files.
A class may list in ``HPARAMS`` the keys of the ``hparams`` group it takes (default: gamma,
lr, tau, weight_decay, max_grad_norm).
``ALGORITHMS`` maps the ``name`` stored in a checkpoint to its class.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

ALGORITHMS = {
    "ddqn": "battle_rl.algos.ddqn:DQN",
    "dqn": "battle_rl.algos.ddqn:DQN",
    "mfq": "battle_rl.algos.mfq:MFQ",
    "qmix": "battle_rl.algos.qmix:QMIX",
    "vdn": "battle_rl.algos.qmix:QMIX",
    "ippo": "battle_rl.algos.ppo:PPO",
    "mappo": "battle_rl.algos.ppo:PPO",
}


def algorithm_class(name: str):
    if name not in ALGORITHMS:
        raise KeyError(name)
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def policy_from_checkpoint(ckpt: dict, path: Path | str) -> torch.nn.Module:
    """The exportable policy network of a battle-rl Lightning checkpoint."""
    from battle_rl.networks import PolicyLoadError

    name = ckpt["hyper_parameters"].get("name", "ddqn")
    try:
        cls = algorithm_class(name)
    except KeyError:
        raise PolicyLoadError(f"{path}: checkpoint of unknown algorithm '{name}' "
                              f"(known: {', '.join(ALGORITHMS)})") from None
    try:
        return cls.policy_from_checkpoint(ckpt)
    except RuntimeError as e:
        raise PolicyLoadError(
            f"{path}: the checkpoint's weights do not fit its {name} network: "
            f"{str(e).splitlines()[0]}"
        ) from None
