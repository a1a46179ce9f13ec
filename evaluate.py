"""Evaluate a policy as blue: `python evaluate.py checkpoint=PATH` writes eval.json."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from battle_rl.cli import entry_point, guarded


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@guarded
def main(cfg: DictConfig) -> float:
    from battle_rl.evaluation import run_evaluation

    table = run_evaluation(cfg, Path(HydraConfig.get().runtime.output_dir))
    return min(row["win"] / row["episodes"] for row in table.values())


if __name__ == "__main__":
    from battle_rl.config import validate_eval

    entry_point(main, "evaluate", validate_eval)()
