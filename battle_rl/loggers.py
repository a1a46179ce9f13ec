"""Loggers: W&B (offline unless asked), CSV, or none. Problems surface at start, in one line."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from battle_rl.config import ConfigError


def wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"hydra.run.dir={run_dir} is not writable: {e.strerror}") from None


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of every job of one sweep: its folder under ``multirun/``, '/' -> '_'
    (``multirun/grid/2026-01-02_03-04-05`` -> ``grid_2026-01-02_03-04-05``); for a folder
    elsewhere, its last two parts."""
    parts = Path(sweep_dir).parts
    if Path(sweep_dir).is_absolute():
        parts = parts[-2:]
    elif parts and parts[0] == "multirun":
        parts = parts[1:]
    return "_".join(p for p in parts if p not in ("", ".", "/")) or "sweep"


def hydra_group_and_choices() -> tuple[str | None, dict]:
    """(W&B group of this Hydra multirun job or None, the chosen config group options)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, {}
    group = sweep_group(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    return group, dict(hc.runtime.choices)


def run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    """``algo:<name>``, ``opponent:<option>``, ``reward:<option>``, then ``logger.tags``."""
    opponent = choices.get("opponent") or "+".join(
        k for k, w in (cfg.get("opponent") or {}).get("weights", {}).items() if w > 0)
    tags = [f"algo:{cfg.algo.get('name', choices.get('algo', '?'))}",
            f"opponent:{opponent or '?'}", f"reward:{choices.get('reward', 'custom')}"]
    return tags + [t for t in (cfg.logger.get("tags") or []) if t not in tags]


def make_logger(cfg: DictConfig, run_dir: Path, run_name: str):
    """The Lightning logger chosen by ``cfg.logger.name`` (wandb, csv or none)."""
    lc = cfg.logger
    if lc.name == "none":
        return False
    if lc.name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if lc.name != "wandb":
        raise ConfigError(f"logger.name={lc.name!r} is not allowed: one of wandb, csv, none")
    if lc.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode={lc.mode!r} is not allowed: offline, online or disabled")
    if lc.mode == "online" and not wandb_key_available():
        raise ConfigError("logger.mode=online needs a W&B API key: run `wandb login` or set "
                          "WANDB_API_KEY (the default logger.mode=offline needs no account)")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    sweep, choices = hydra_group_and_choices()
    group = lc.get("group") or sweep  # all jobs of one multirun share a group
    config = OmegaConf.to_container(cfg, resolve=True)
    config["logger"]["group"] = group
    return WandbLogger(
        project=lc.project,
        entity=lc.get("entity"),
        group=group,
        tags=run_tags(cfg, choices),
        name=run_name,
        save_dir=str(run_dir),
        mode=lc.mode,
        config=config,
        settings=wandb.Settings(init_timeout=float(lc.get("init_timeout", 90))),
    )


def close_logger(logger) -> None:
    """Finish the W&B run of this job (a multirun would otherwise log into one run)."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()
