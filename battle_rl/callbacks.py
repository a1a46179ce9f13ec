"""Evaluation during training: periodic batched Table I, best-policy tracking, early stop."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytorch_lightning as pl

from battle_rl.evaluation import Evaluator, evaluate
from battle_rl.opponents import Opponent


class EvalCallback(pl.Callback):
    """Every ``every_n_steps`` updates, play ``episodes`` games against each opponent.

    Logs ``eval/win_rate/<opponent>``, keeps the best policy weights (highest worst-case win
    rate, then kill margin), appends to ``eval_history.jsonl`` and, with ``stop_win_rate``,
    stops training after ``patience`` evaluations in a row at or above it against every
    opponent. Time spent here is measured, so training time can be reported without it;
    ``max_train_seconds`` ends training once that much training time (evaluation excluded)
    has passed, so that runs with different evaluation costs get the same training budget.
    """

    def __init__(self, opponents: dict[str, Opponent], every_n_steps: int, episodes: int,
                 max_cycles: int, seed: int = 10_000, stop_win_rate: float | None = None,
                 patience: int = 1, n_envs: int = 15, history_path: str | Path | None = None,
                 max_train_seconds: float | None = None):
        self.opponents, self.every, self.episodes = opponents, every_n_steps, episodes
        self.seed, self.stop_win_rate, self.patience = seed, stop_win_rate, patience
        self.evaluator = Evaluator(max_cycles=max_cycles, n_envs=n_envs)
        self.history_path = Path(history_path) if history_path else None
        self.best_score: tuple | None = None
        self.best_state: dict | None = None
        self.best_step: int | None = None
        self.eval_seconds = 0.0
        self.streak = 0
        self.max_train_seconds = max_train_seconds
        self._start = None

    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def train_seconds(self) -> float:
        """Wall time of training so far, evaluation excluded."""
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self.eval_seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self.run(trainer, pl_module)
        if self.max_train_seconds is not None and self.train_seconds() >= self.max_train_seconds:
            trainer.should_stop = True

    def run(self, trainer, pl_module) -> dict:
        t0 = time.perf_counter()
        net = pl_module.policy_net()
        was_training = net.training
        net.eval()
        table = evaluate(net, self.opponents, self.episodes, self.seed, self.evaluator)
        net.train(was_training)
        win_rates = {name: row["win"] / row["episodes"] for name, row in table.items()}
        margin = sum(r["blue_kills"] - r["red_kills"] for r in table.values()) / len(table)
        score = (min(win_rates.values()), margin)
        step = trainer.global_step
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step = score, step
            self.best_state = copy.deepcopy(net.state_dict())
        self.eval_seconds += time.perf_counter() - t0
        metrics = {f"eval/win_rate/{k}": v for k, v in win_rates.items()}
        metrics.update({f"eval/kill_margin/{k}": r["blue_kills"] - r["red_kills"]
                        for k, r in table.items()})
        metrics["eval/min_win_rate"] = score[0]
        metrics["eval/train_seconds"] = self.train_seconds()
        if trainer.logger:
            trainer.logger.log_metrics(metrics, step=step)
        pl_module.last_eval = win_rates
        if self.history_path:
            with self.history_path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics, "table": table}) + "\n")
        if self.stop_win_rate is not None:
            self.streak = self.streak + 1 if score[0] >= self.stop_win_rate else 0
            if self.streak >= self.patience:
                trainer.should_stop = True
        return table
