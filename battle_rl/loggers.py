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


def make_logger(cfg: DictConfig, run_dir: Path, run_name: str):
    """The Lightning logger chosen by ``cfg.logger.name`` (wandb, csv or none)."""
    lc = cfg.logger
    if lc.name == "none":
        return False
    if lc.name == "csv":
        return csv_logger(run_dir)
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

    return WandbLogger(
        project=lc.project,
        entity=lc.get("entity"),
        group=lc.get("group"),
        tags=list(lc.get("tags") or []),
        name=run_name,
        save_dir=str(run_dir),
        mode=lc.mode,
        config=OmegaConf.to_container(cfg, resolve=True),
        settings=wandb.Settings(init_timeout=float(lc.get("init_timeout", 90))),
    )


def csv_logger(run_dir: Path):
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=str(run_dir), name="csv", version="")  # <run dir>/csv/metrics.csv


def make_loggers(cfg: DictConfig, run_dir: Path, run_name: str) -> list:
    """The chosen logger, and beside W&B a CSV copy: W&B keeps its records in a binary log
    that only its own tools read, and ``python -m battle_rl.plot`` draws from local files."""
    logger = make_logger(cfg, run_dir, run_name)
    if not logger:
        return []
    return [logger, csv_logger(run_dir)] if cfg.logger.name == "wandb" else [logger]


def close_logger(logger) -> None:
    """Finish the W&B run of this job (a multirun would otherwise log into one run)."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()
