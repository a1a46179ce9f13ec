"""The training task behind ``train.py``: config -> env + learner -> dataset -> Trainer -> policy.

Order matters: every check (config ranges, opponent files, logger, output folder) runs before
the first environment is built, so a bad command costs seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from battle_rl.callbacks import EvalCallback
from battle_rl.config import validate_train
from battle_rl.env import BattleEnv
from battle_rl.evaluation import EVAL_OPPONENTS, evaluate, format_table, write_eval_json
from battle_rl.loggers import check_writable, close_logger, make_logger
from battle_rl.networks import export_policy
from battle_rl.opponents import check_opponent, make_mix, make_opponent


def opponents_dir(cfg: DictConfig) -> Path:
    return Path(to_absolute_path(str(cfg.opponents_dir)))


def configure_threads(threads: int) -> None:
    """Small convolutions run fastest on few intra-op threads; one job = its share of cores."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def preflight(cfg: DictConfig, run_dir: Path) -> None:
    """All checks that need no environment: config ranges, opponent files, output folder."""
    validate_train(cfg)
    odir = opponents_dir(cfg)
    for name, weight in cfg.opponent.weights.items():
        if weight > 0:
            check_opponent(name, odir)
    if cfg.eval.every_n_steps > 0 or cfg.eval.final_episodes > 0:
        for name in cfg.eval.opponents:
            check_opponent(name, odir)
    check_writable(run_dir)


def build(cfg: DictConfig, run_dir: Path):
    """The learner module, its rollout dataset, and the evaluation callback (or None)."""
    hp = cfg.hparams
    odir = opponents_dir(cfg)
    module = instantiate(
        cfg.algo, gamma=hp.gamma, lr=hp.lr, tau=hp.tau, weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm, log_every=cfg.log_every, _recursive_=False,
    )
    env = BattleEnv(cfg.env.map_size, cfg.env.max_cycles, dict(cfg.reward))
    opponent = make_mix(dict(cfg.opponent.weights), odir, seed=cfg.seed)
    dataset = module.make_dataset(env, opponent, hp, seed=cfg.seed)
    module.rollout = dataset
    eval_cb = None
    if cfg.eval.every_n_steps > 0:
        eval_cb = EvalCallback(
            opponents={n: make_opponent(n, odir, seed=cfg.seed) for n in cfg.eval.opponents},
            every_n_steps=cfg.eval.every_n_steps,
            episodes=cfg.eval.episodes,
            max_cycles=cfg.eval.max_cycles,
            seed=cfg.eval.seed + 10_000,  # not the final evaluation's games
            stop_win_rate=cfg.eval.stop_win_rate,
            patience=cfg.eval.patience,
            history_path=run_dir / "eval_history.jsonl",
            max_train_seconds=cfg.eval.get("max_train_seconds"),
        )
    return module, dataset, eval_cb


def run_name(cfg: DictConfig) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.override_dirname or "defaults"
    except ValueError:
        return "defaults"


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, export ``policy.pt``, run the final evaluation; returns a summary dict."""
    preflight(cfg, run_dir)
    configure_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    logger = make_logger(cfg, run_dir, run_name(cfg))
    try:
        module, dataset, eval_cb = build(cfg, run_dir)
        ckpt_dir = run_dir / "checkpoints"
        callbacks: list[pl.Callback] = [
            pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="step-{step}",
                                         every_n_train_steps=cfg.checkpoint_every,
                                         save_top_k=0, save_last=True),
        ]
        if eval_cb is not None:
            callbacks.append(eval_cb)
        trainer = pl.Trainer(**cfg.trainer, logger=logger, callbacks=callbacks,
                             default_root_dir=str(run_dir))
        loader = DataLoader(dataset, batch_size=None, num_workers=0)
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        wall = time.perf_counter() - t0

        net = module.policy_net()
        source = "final"
        if eval_cb is not None and eval_cb.best_state is not None:
            if eval_cb.best_step != trainer.global_step:
                eval_cb.run(trainer, module)  # the last weights get their chance too
            if eval_cb.best_step != trainer.global_step:
                net.load_state_dict(eval_cb.best_state)
                source = f"best evaluation (step {eval_cb.best_step})"
        policy_path = export_policy(net, run_dir / "policy.pt")
        summary = {
            "steps": trainer.global_step,
            "episodes": dataset.episodes,
            "cycles": dataset.cycles,
            "wall_seconds": wall,
            "train_seconds": eval_cb.train_seconds() if eval_cb else wall,
            "policy_source": source,
        }
        if cfg.eval.final_episodes > 0:
            odir = opponents_dir(cfg)
            table = evaluate(
                net.eval(), {n: make_opponent(n, odir, seed=cfg.seed) for n in cfg.eval.opponents},
                episodes=cfg.eval.final_episodes, seed=cfg.eval.seed, max_cycles=cfg.eval.max_cycles,
            )
            write_eval_json(table, run_dir / "eval.json")
            print(format_table(table), flush=True)
            summary["eval"] = table
            # the objective a sweep maximises: the worst-case win rate over the opponents
            summary["objective"] = min(r["win"] / r["episodes"] for r in table.values())
            if logger:
                logger.log_metrics({f"final/win_rate/{k}": r["win"] / r["episodes"]
                                    for k, r in table.items()}, step=trainer.global_step)
        summary["policy"] = str(policy_path)
        return summary
    finally:
        close_logger(logger)
