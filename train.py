"""Train an agent: `python train.py algo=ddqn env.max_cycles=300` (see conf/ for every option)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from battle_rl.cli import entry_point, guarded


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@guarded
def main(cfg: DictConfig) -> float:
    from battle_rl.training import train  # heavy imports after Hydra has parsed the command

    summary = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    if summary["policy"]:  # None on DDP ranks other than 0
        print(summary["policy"], flush=True)  # the last line: where the policy is
    if summary["interrupted"]:
        sys.exit(130)  # stopped by Ctrl-C / SIGTERM after saving
    return summary["objective"]


def validate(cfg: DictConfig) -> None:
    from battle_rl.config import validate_train
    from battle_rl.resume import check_resume

    validate_train(cfg)
    check_resume(cfg)


if __name__ == "__main__":
    from battle_rl.distributed import shared_run_dir
    from battle_rl.resume import resume_argv

    entry_point(main, "config", validate,
                rewrite_argv=lambda argv: shared_run_dir(resume_argv(argv)))()
