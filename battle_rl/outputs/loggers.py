"""Loggers: W&B (offline unless asked), CSV, or none. Problems surface at start, in one line."""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from battle_rl.config import ConfigError


WANDB_RUN_FILE = "wandb_run.json"  # in the run folder: the W&B run's id, group and folder


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
        probe = run_dir / f".write-test-{os.getpid()}"  # DDP ranks may probe at once
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


def hydra_config_id() -> str:
    """This job's configuration (:func:`battle_rl.score.config_id`): its overrides without the
    seed, so that the seeds of one configuration share it (``defaults`` outside Hydra)."""
    from battle_rl.score import RUN_ONLY_KEYS, config_id

    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return "defaults"
    exclude = hc.job.config.override_dirname.get("exclude_keys") or RUN_ONLY_KEYS
    return config_id(list(hc.overrides.task), exclude)


MAX_TAG = 64  # W&B refuses a longer tag (and with it the whole run)


def run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    """``algo:<name>``, ``opponent:<option>``, ``reward:<option>``, then ``logger.tags``."""
    opponent = choices.get("opponent") or "+".join(
        k for k, w in (cfg.get("opponent") or {}).get("weights", {}).items() if w > 0)
    tags = [f"algo:{cfg.algo.get('name', choices.get('algo', '?'))}",
            f"opponent:{opponent or '?'}", f"reward:{choices.get('reward', 'custom')}"]
    tags += [t for t in (cfg.logger.get("tags") or []) if t not in tags]
    return [t if len(t) <= MAX_TAG else t[:MAX_TAG - 3] + "..." for t in tags]


def make_logger(cfg: DictConfig, run_dir: Path, run_name: str, resuming: bool = False):
    """The Lightning logger chosen by ``cfg.logger.name`` (wandb, csv or none).

    A W&B run records its id, group and folder in ``<run dir>/wandb_run.json`` when it starts
    (``start_wandb``; the sweep report reads it); a resumed run continues the same W&B run.
    """
    lc = cfg.logger
    if lc.name == "none":
        return False
    if lc.name == "csv":
        return csv_logger(run_dir, append=resuming)
    if lc.name != "wandb":
        raise ConfigError(f"logger.name={lc.name!r} is not allowed: one of wandb, csv, none")
    if lc.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode={lc.mode!r} is not allowed: offline, online or disabled")
    if lc.mode == "online" and not wandb_key_available():
        raise ConfigError("logger.mode=online needs a W&B API key: run `wandb login` or set "
                          "WANDB_API_KEY (the default logger.mode=offline needs no account)")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    # W&B's own notices (the sync hint, a deprecation warning about an argument Lightning
    # passes) only with debug=true: train.py prints where the run is and how to sync it
    wandb.setup(settings=wandb.Settings(silent=not cfg.get("debug", False)))

    sweep, choices = hydra_group_and_choices()
    group = lc.get("group") or sweep  # all jobs of one multirun share a group
    config = OmegaConf.to_container(cfg, resolve=True)
    config["logger"]["group"] = group
    # the configuration's identity, the seed left out: "Group by config_id" (or job_type) in
    # the W&B runs table averages the seeds of one configuration (docs/sweeps.md)
    config["config_id"] = hydra_config_id()
    id_file = run_dir / WANDB_RUN_FILE
    run_id = json.loads(id_file.read_text())["id"] if resuming and id_file.is_file() else None
    return WandbLogger(
        project=lc.project,
        id=run_id,
        resume="allow" if run_id else None,
        entity=lc.get("entity"),
        group=group,
        job_type=config["config_id"],
        tags=run_tags(cfg, choices),
        name=run_name,
        save_dir=str(run_dir),
        mode=lc.mode,
        config=config,
        settings=wandb.Settings(init_timeout=float(lc.get("init_timeout", 90))),
    )


def start_wandb(loggers: list, run_dir: Path, mode: str | None = "offline") -> None:
    """Start the W&B run now, so that problems show at once, and record its id, group and
    folder in ``<run dir>/wandb_run.json``. Under DDP call it on rank 0 only: one run is
    logged."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            (run_dir / WANDB_RUN_FILE).write_text(json.dumps(
                {"id": run.id, "group": run.group, "name": run.name, "project": run.project,
                 "mode": mode, "config_id": run.config.get("config_id"),
                 "dir": str(Path(run.dir).parent)}, indent=1))


def csv_logger(run_dir: Path, append: bool = False):
    """Lightning's CSVLogger (``<run dir>/csv/metrics.csv``); a resumed run appends to the file
    instead of deleting it."""
    import csv

    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self):
            if self._fs.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as f:
                    self.metrics_keys = next(csv.reader(f), [])

    class ResumedCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    cls = ResumedCSVLogger if append else CSVLogger
    return cls(save_dir=str(run_dir), name="csv", version="")


def make_loggers(cfg: DictConfig, run_dir: Path, run_name: str, resuming: bool = False) -> list:
    """The chosen logger, and beside W&B a CSV copy: W&B keeps its records in a binary log
    that only its own tools read, and ``python -m battle_rl.outputs.plot`` draws from local
    files."""
    logger = make_logger(cfg, run_dir, run_name, resuming)
    if not logger:
        return []
    if cfg.logger.name == "wandb":
        return [logger, csv_logger(run_dir, append=resuming)]
    return [logger]


def close_logger(logger) -> None:
    """Finish the W&B run of this job (a multirun would otherwise log into one run)."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()


def where_line(run_dir: Path, loggers: list, width: int = 80) -> str:
    """The run's folder, and where its metrics go (W&B offline: how to upload): one line, or
    two where one would be wider than ``width``."""
    def short(p) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p)

    line = f"run folder: {short(run_dir)}"
    where = "no logger"
    wandb_logger = next((lg for lg in loggers if type(lg).__name__ == "WandbLogger"), None)
    if wandb_logger is not None:
        info = json.loads((run_dir / WANDB_RUN_FILE).read_text())
        if info["mode"] == "offline":  # every offline segment of the run (resumed ones too)
            segments = f"{short(Path(info['dir']).parent)}/offline-run-*"
            where = f"W&B offline; upload: wandb sync {segments}"
        elif info["mode"] == "online":
            where = f"W&B: {wandb_logger.experiment.url}"
        else:
            where = f"W&B disabled, metrics in {short(run_dir / 'csv' / 'metrics.csv')}"
    elif loggers:
        where = f"metrics in {short(run_dir / 'csv' / 'metrics.csv')}"
    return f"{line}; {where}" if len(line) + 2 + len(where) <= width else f"{line}\n{where}"
