"""The terminal during training: the composed configuration as a tree, and a progress bar with
live figures (updates and agent steps per second, epsilon, episodes, the last win rates)."""

from __future__ import annotations

import time

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree


def config_tree(cfg: DictConfig) -> Tree:
    """The resolved configuration: one branch per group, top-level keys first."""
    tree = Tree("[bold]config[/]", guide_style="dim")

    def add(branch: Tree, node: dict) -> None:
        flat = {k: v for k, v in node.items() if not isinstance(v, dict)}
        for key, value in flat.items():
            branch.add(f"{escape(str(key))}: [cyan]{escape(repr(value))}[/]")
        for key, value in node.items():
            if isinstance(value, dict):
                add(branch.add(f"[bold]{escape(str(key))}[/]"), value)

    add(tree, OmegaConf.to_container(cfg, resolve=True))
    return tree


def print_config(cfg: DictConfig) -> None:
    Console().print(config_tree(cfg))


class BattleProgressBar(RichProgressBar):
    """Lightning's rich bar (at a few refreshes per second: the machine has 2 cores to spare
    for the game and the updates), showing the learner's rollout counters and the win rates
    of the last evaluation instead of Lightning's version number."""

    def __init__(self, refresh_rate: int = 4, rate_window: float = 1.0):
        super().__init__(refresh_rate=refresh_rate, leave=True)
        self.rate_window = rate_window  # seconds over which rates are measured
        self._mark: tuple[float, int, int] | None = None  # (time, global step, agent steps)
        self._rates: dict[str, str] = {}
        self._last_eval: dict | None = None  # the win rates shown, set by the EvalCallback

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        rollout = getattr(pl_module, "rollout", None)
        evals = getattr(pl_module, "last_eval", None)
        if evals is not self._last_eval:  # an evaluation paused training: measure anew
            self._last_eval, self._mark = evals, None
        if rollout is not None:
            items.update(self._measure_rates(trainer.global_step, rollout.agent_steps))
            if getattr(rollout, "epsilon", None) is not None:  # on-policy learners have none
                items["eps"] = f"{rollout.epsilon:.3f}"
            items["episodes"] = str(rollout.episodes)
        for name, rate in (evals or {}).items():
            items[f"win:{name}"] = f"{rate:.0%}"
        return items

    def _measure_rates(self, step: int, agent_steps: int) -> dict[str, str]:
        """Rates over the last ``rate_window`` seconds (called every batch: stays cheap)."""
        now = time.perf_counter()
        if self._mark is None:
            self._mark = (now, step, agent_steps)
        t0, step0, agent0 = self._mark
        if step > step0:  # shown from the second update on, even in a run shorter than a window
            self._rates = {"upd/s": f"{(step - step0) / (now - t0):.0f}",
                           "agent-steps/s": f"{(agent_steps - agent0) / (now - t0):,.0f}"}
        if now - t0 >= self.rate_window:
            self._mark = (now, step, agent_steps)
        return self._rates
