"""Algorithms: one LightningModule per family, all behind the same small interface.

A learner module has ``greedy(obs, alive) -> actions`` (used by the rollout dataset and the
evaluator), ``policy_net()`` (the module exported as ``policy.pt``) and a ``training_step``.
"""

from __future__ import annotations

from pathlib import Path

import torch


def policy_from_checkpoint(ckpt: dict, path: Path | str) -> torch.nn.Module:
    """The exportable policy network of a battle-rl Lightning checkpoint."""
    from battle_rl.networks import PolicyLoadError, build_q_network

    hp = ckpt["hyper_parameters"]
    net = build_q_network(hp["network"])
    prefix = "q_net."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise PolicyLoadError(
            f"{path}: the checkpoint's weights do not fit its network {dict(hp['network'])}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return net
