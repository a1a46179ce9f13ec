"""Resuming a run: find its checkpoint, replay its command, restore what Lightning does not.

``python train.py resume=PATH`` (a run directory or a ``.ckpt``) continues the same run in the
same directory: the original overrides are replayed (new ones on the command line win), and
Lightning restores the module, optimizer and step counters from the checkpoint, while the
module's ``on_load_checkpoint`` restores the rollout counters (epsilon position), the RNGs
and, from ``checkpoints/replay.npz`` beside the checkpoint, the replay buffer. Under DDP every
rank's rollout state is in the checkpoint and every rank has its own buffer file
(``replay_rank1.npz``, ...): each rank resumes its own stream (``battle_rl.distributed``).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from battle_rl.errors import ConfigError, PolicyLoadError
from battle_rl.safe_load import is_torchscript, torch_load

REPLAY_FILE = "replay.npz"  # rank 0's (a one-process run's); rank r > 0: replay_rank{r}.npz
CODE_KEYS = re.compile(r"_(target|args|partial|convert|recursive)_")


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The Lightning checkpoint to resume from, or a one-line error saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"resume={path}: no checkpoints/last.ckpt in that directory "
                              f"(was it a training run directory?)")
        path = ckpt
    if not path.is_file():
        raise ConfigError(f"resume={path}: no such file or directory")
    from battle_rl.networks import course_format

    if is_torchscript(path):
        raise ConfigError(f"resume={path} is an exported policy (TorchScript), not a training "
                          f"checkpoint: resume from the run directory or checkpoints/last.ckpt")
    try:
        ckpt = torch_load(path)
    except PolicyLoadError as e:
        raise ConfigError(f"resume: {e}") from None
    if isinstance(ckpt, dict) and course_format(ckpt):
        raise ConfigError(f"resume={path} is a course network ({course_format(ckpt)} format), "
                          f"not a battle-rl checkpoint: use it as an opponent "
                          f"(opponent=pretrained / final) or evaluate it with evaluate.py")
    if not (isinstance(ckpt, dict) and "state_dict" in ckpt and "hyper_parameters" in ckpt
            and "rollout" in ckpt):
        raise ConfigError(f"resume={path} is not a battle-rl training checkpoint")
    return path


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite ``resume=PATH ...`` into the original run's overrides + the new ones, and, where
    the defaults have changed since the run started, its saved values (``pinned_values``)."""
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume or resume[-1] in ("resume=null", "resume="):
        return argv
    ckpt = find_checkpoint(resume[-1].split("=", 1)[1])
    run_dir = run_dir_of(ckpt)
    saved = run_dir / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(saved.read_text()) if saved.is_file() else []
    original = [o for o in original or [] if not o.startswith(("resume=", "hydra.run.dir="))]
    for o in original:  # a run folder may come from anyone: it must not pick code to run
        if o.lstrip("+~").startswith("hydra") or CODE_KEYS.search(o):
            raise ConfigError(f"resume: {saved} holds the override {o!r}, which battle-rl does "
                              f"not replay (Hydra settings and _target_-style keys can choose "
                              f"code to run); delete that line if you trust the file")
    rest = [a for a in argv if not a.startswith("resume=")]
    new = [f"resume={ckpt.resolve()}"]
    if not any(a.startswith("hydra.run.dir=") for a in rest):
        new.append(f"hydra.run.dir={run_dir.resolve()}")
    merged: dict[str, str] = {}  # one override per key, the newest wins
    for arg in original + rest + new:
        merged.pop(arg.split("=", 1)[0], None)
        merged[arg.split("=", 1)[0]] = arg
    return pinned_values(run_dir / ".hydra" / "config.yaml", original, rest + new) + \
        list(merged.values())


# options added after runs and checkpoints were written, at the value those runs had
LATER_OPTIONS = {"algo.network.dueling": False, "algo.network.action_mask": False,
                 "algo.network.channels": None, "reward.hurt": 0.0,
                 "hparams.explore_with": "random"}
LATER_NETWORK_OPTIONS = {k.rsplit(".", 1)[1]: v for k, v in LATER_OPTIONS.items()
                         if k.startswith("algo.network.")}


def pinned_values(saved: Path, original: list[str], rest: list[str]) -> list[str]:
    """``++key=value`` for each value of the run's saved configuration that today's defaults
    would change: a resumed run goes on as the run it was, not as a new default run. The new
    command line still wins (keys it changes are left to it)."""
    if not saved.is_file():
        return []
    from omegaconf import OmegaConf

    from battle_rl.config import compose_overrides

    def leaves(cfg) -> dict:
        plain = OmegaConf.to_container(cfg, resolve=False)
        return _flatten({k: v for k, v in plain.items() if k != "hydra"})

    was = leaves(OmegaConf.load(saved))
    today = leaves(compose_overrides("config", original))
    wanted = leaves(compose_overrides("config", original + rest))
    # options added since the run started count at the value they had before they existed
    was.update({k: v for k, v in LATER_OPTIONS.items() if k in today and k not in was})
    pinned = []
    for key, value in was.items():
        if key not in today or today[key] == value or wanted.get(key) != today[key]:
            continue  # an option since removed, unchanged, or set by the new command line
        if CODE_KEYS.search(key):
            raise ConfigError(f"resume: {saved} holds {key}, which battle-rl does not replay "
                              f"(_target_-style keys can choose code to run)")
        pinned.append(f"++{key}={_override_value(value)}")
    return pinned


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _override_value(v) -> str:
    """A value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_override_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_override_value(x)}" for k, x in v.items()) + "}"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_resume(cfg) -> None:
    """``resume=``'s checkpoint against the composed command, before Hydra starts the job (and
    rewrites the run's ``.hydra/overrides.yaml``): a refused resume leaves the run's saved
    command as it was, so a plain ``resume=PATH`` still works after it."""
    if cfg.get("resume"):  # resume_argv has found the checkpoint: its path
        from battle_rl.training import make_module  # Lightning: only when resuming

        check_compatible(Path(cfg.resume), make_module(cfg))


def check_compatible(ckpt_path: Path, module) -> int:
    """The checkpoint's algorithm and network must be this run's (says which differs);
    returns the checkpoint's step."""
    ckpt = torch_load(ckpt_path)
    saved, now = ckpt["hyper_parameters"], module.hparams
    for key in ("name", "network"):
        if key not in saved:
            continue
        was, is_now = _plain(saved[key]), _plain(now.get(key))
        if key == "network" and isinstance(was, dict) and isinstance(is_now, dict):
            was |= {k: v for k, v in LATER_NETWORK_OPTIONS.items() if k in is_now and k not in was}
        if was != is_now:
            raise ConfigError(f"resume={ckpt_path}: the checkpoint was trained with "
                              f"{key}={was}, this run has {key}={is_now}")
    return int(ckpt["global_step"])


def _plain(x):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def replay_file(rank: int = 0) -> str:
    return REPLAY_FILE if rank == 0 else f"replay_rank{rank}.npz"


# -- the rollout's state in the checkpoint ------------------------------------------------
def save_rollout_state(module, checkpoint: dict) -> None:
    """A learner's ``on_save_checkpoint``: its rollout's counters and random states, and the
    global RNGs. Under DDP every rank's are gathered (rank 0 writes the file) into
    ``checkpoint["ranks"]``, with a fingerprint of each rank's weights."""
    from battle_rl.distributed import gather, weights_digest

    state = {"rollout": module.rollout.state_dict() if module.rollout is not None else None,
             "rng": rng_state()}
    checkpoint.update(state)  # rank 0's at the top, where a one-process run keeps it
    trainer = module.trainer
    if trainer.world_size > 1:
        state["weights"] = weights_digest(module.state_dict())
        checkpoint["ranks"] = gather(trainer, state)


def load_rollout_state(module, checkpoint: dict) -> None:
    """A learner's ``on_load_checkpoint``: this rank's rollout state and RNGs, if saved (a
    rank the checkpoint has none for starts a fresh stream and says so)."""
    rank = module.trainer.global_rank
    ranks = checkpoint.get("ranks") or [{"rollout": checkpoint.get("rollout"),
                                         "rng": checkpoint.get("rng")}]
    who = f"rank {rank}: " if module.trainer.world_size > 1 else ""
    if rank >= len(ranks):
        print(f"note: {who}the checkpoint holds the rollouts of {len(ranks)} process(es): "
              f"this rank starts a new one", flush=True)
        return
    state = ranks[rank]
    if module.rollout is not None and state.get("rollout"):
        rollout = module.rollout
        rollout.load_state_dict(state["rollout"])
        if hasattr(rollout, "buffer"):  # replay learners
            print(f"{who}resumed at step {checkpoint['global_step']}: epsilon "
                  f"{rollout.epsilon:.6f}, {len(rollout.buffer)} transitions in the replay "
                  f"buffer", flush=True)
        else:  # on-policy learners keep no rollout across a resume
            print(f"{who}resumed at step {checkpoint['global_step']}: {rollout.episodes} "
                  f"episodes, {rollout.rollouts} rollouts played; a new rollout starts",
                  flush=True)
    if state.get("rng"):
        set_rng_state(state["rng"])


# -- RNG states ---------------------------------------------------------------------------
def rng_state() -> dict:
    """Python, numpy and torch RNG states, in types the safe loader reads back (the numpy
    key as a list of ints: an array would need numpy's unpickling)."""
    kind, key, *rest = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, key.tolist(), *rest),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# -- the replay buffer beside the checkpoint ------------------------------------------------
def save_replay(buffer, ckpt_dir: Path, step: int, rank: int = 0) -> Path:
    """Write the buffer's used rows to ``replay.npz`` (rank r > 0: ``replay_rank{r}.npz``)
    atomically (temp file + rename)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / replay_file(rank)
    fd, tmp = tempfile.mkstemp(dir=ckpt_dir, prefix=".replay-", suffix=".npz")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, step=np.int64(step), **buffer.state_dict())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_replay(buffer, ckpt_dir: Path, step: int, rank: int = 0) -> bool:
    """Restore the buffer (of ``rank``) saved with the checkpoint of ``step``; False if there
    is none."""
    path = ckpt_dir / replay_file(rank)
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); resume with checkpoint_buffer=false "
                          f"to start from an empty replay buffer") from None
    saved_step = int(state.pop("step"))
    if saved_step != step:  # killed between the two writes: close enough, but say so
        print(f"note: {path} is from step {saved_step}, the checkpoint from step {step}",
              flush=True)
    try:
        buffer.load_state_dict(state)
    except ValueError as e:
        raise ConfigError(f"resume: {e}") from None
    return True
