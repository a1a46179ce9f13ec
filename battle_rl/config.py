"""Checks on the composed configuration, run before anything is built.

Every problem is reported as one line naming the key, the value and what is allowed; the entry
points print it and exit with status 2, without a traceback (``debug=true`` shows one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
OPPONENT_NAMES = ("random", "pretrained", "final", "scripted", "self_play", "champion")
# self-play needs a learner to copy: a training opponent only
EVAL_OPPONENT_NAMES = tuple(n for n in OPPONENT_NAMES if n != "self_play")
SELF_PLAY_SAMPLING = ("latest", "uniform", "win_rate")
# Lightning's script launcher re-runs train.py per rank; strategies that pickle the learner into
# spawned processes cannot carry the game with it
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true")
SWEEPS_DIR = CONF_DIR.parent / "multirun_sweeps"


from battle_rl.errors import ConfigError  # noqa: F401 (re-exported)


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def _check(cfg, key, ok, allowed):
    value = _get(cfg, key)
    if value is None:
        return
    try:
        good = bool(ok(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate_train(cfg: DictConfig) -> None:
    """Ranges of the training configuration."""
    validate_env(cfg)
    h = "hparams"
    unit = lambda x: 0.0 <= float(x) <= 1.0  # noqa: E731
    _check(cfg, f"{h}.epsilon.start", unit, "epsilon must be in [0, 1]")
    _check(cfg, f"{h}.epsilon.end", unit, "epsilon must be in [0, 1]")
    if _get(cfg, f"{h}.epsilon.end") is not None and _get(cfg, f"{h}.epsilon.start") is not None:
        _check(cfg, f"{h}.epsilon.end", lambda x: x <= cfg[h].epsilon.start,
               f"must be <= hparams.epsilon.start={cfg[h].epsilon.start}")
    _check(cfg, f"{h}.epsilon.decay", lambda x: float(x) >= 0, "must be >= 0")
    _check(cfg, f"{h}.epsilon.unit", lambda x: x in ("cycle", "episode"),
           "one of 'cycle', 'episode'")
    _check(cfg, f"{h}.gamma", lambda x: 0.0 <= float(x) < 1.0, "gamma must be in [0, 1)")
    _check(cfg, f"{h}.tau", lambda x: 0.0 < float(x) <= 1.0, "tau must be in (0, 1]")
    _check(cfg, f"{h}.lr", lambda x: float(x) > 0, "the learning rate must be > 0")
    _check(cfg, f"{h}.batch_size", lambda x: int(x) == x and x > 0, "a positive integer")
    _check(cfg, f"{h}.buffer_size", lambda x: int(x) == x and x >= 163,
           "an integer >= 163 (two cycles of a full team)")
    _check(cfg, f"{h}.batch_size", lambda x: x <= cfg[h].buffer_size,
           f"must be <= hparams.buffer_size={_get(cfg, f'{h}.buffer_size')}")
    _check(cfg, f"{h}.updates_per_cycle", lambda x: float(x) > 0, "must be > 0")
    _check(cfg, f"{h}.warmup", lambda x: int(x) == x and x >= 0, "an integer >= 0")
    _check(cfg, f"{h}.max_grad_norm", lambda x: float(x) > 0, "must be > 0")
    _check(cfg, f"{h}.episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1 (or null)")
    _check(cfg, "eval.every_n_steps", lambda x: int(x) == x and x >= 0, "an integer >= 0 (0: off)")
    _check(cfg, "eval.episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "eval.workers", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "eval.final_episodes", lambda x: int(x) == x and x >= 0, "an integer >= 0")
    _check(cfg, "eval.video_every", lambda x: int(x) == x and x >= 0, "an integer >= 0 (0: off)")
    _check(cfg, "eval.stop_win_rate", lambda x: 0.0 < float(x) <= 1.0, "in (0, 1] or null")
    _check(cfg, "eval.max_train_seconds", lambda x: float(x) > 0, "seconds > 0, or null")
    _check(cfg, "threads", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "trainer.log_every_n_steps", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "checkpoint_every", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "trainer.max_steps", lambda x: int(x) == x and x >= -1,
           "an integer >= 1 (or -1: no limit)")
    _check(cfg, "trainer.max_time", _is_duration, "a duration DD:HH:MM:SS, e.g. 00:00:05:00")
    _check(cfg, "trainer.strategy", lambda x: x in STRATEGIES,
           f"one of {', '.join(STRATEGIES)} (several processes: trainer=ddp)")
    named = tuple(_get(cfg, "policies") or {})
    for name in named:
        if name in OPPONENT_NAMES:
            raise ConfigError(f"policies.{name}: '{name}' is a built-in opponent; name the "
                              f"policy file otherwise")
    if _get(cfg, "eval.opponents") is not None:
        for name in cfg.eval.opponents:
            _check_eval_opponent("eval.opponents", name, named)
    for name, w in (_get(cfg, "opponent.weights") or {}).items():
        if name not in OPPONENT_NAMES + named:
            raise ConfigError(f"opponent.weights.{name}: unknown opponent "
                              f"(choose from: {', '.join(OPPONENT_NAMES + named)}; a policy "
                              f"file needs +policies.{name}=PATH)")
        _check(cfg, f"opponent.weights.{name}", lambda x: float(x) >= 0, "a weight >= 0")
    _check(cfg, "self_play.every_n_steps", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "self_play.pool_size", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "self_play.sampling", lambda x: x in SELF_PLAY_SAMPLING,
           "one of " + ", ".join(SELF_PLAY_SAMPLING))
    _check(cfg, "hparams.both_teams", lambda x: isinstance(x, bool), "true or false")
    _check(cfg, "algo.agent_loss", lambda x: float(x) >= 0, "a weight >= 0 (0: team loss only)")
    _check(cfg, "algo.team_reward", lambda x: x in ("sum", "mean"), "one of 'sum', 'mean'")
    if _get(cfg, "hparams.both_teams"):
        _check(cfg, f"{h}.buffer_size", lambda x: x >= 325,
               "an integer >= 325 with hparams.both_teams=true (two cycles of both teams)")


def _check_eval_opponent(key: str, name: str, named: tuple = ()) -> None:
    if name in named:
        return
    if name == "self_play":
        raise ConfigError(f"{key}: 'self_play' is a training opponent only (it needs a "
                          f"learner to copy); evaluate against an exported snapshot with "
                          f"python -m battle_rl.tournament")
    if name not in EVAL_OPPONENT_NAMES:
        raise ConfigError(f"{key}: unknown opponent {name!r} "
                          f"(choose from: {', '.join(EVAL_OPPONENT_NAMES + named)})")


def _is_duration(x) -> bool:
    parts = str(x).split(":")
    return len(parts) == 4 and all(p.isdigit() for p in parts) and any(int(p) for p in parts)


def validate_eval(cfg: DictConfig) -> None:
    """Ranges of the evaluation configuration (evaluate.py)."""
    from omegaconf import OmegaConf

    validate_env(cfg)
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a policy.pt, a .ckpt or a run directory")
    if not Path(os.path.abspath(str(cfg.checkpoint))).exists():
        raise ConfigError(f"checkpoint not found: {cfg.checkpoint}")
    _check(cfg, "episodes", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "max_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "n_envs", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "workers", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "threads", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    if not cfg.opponents:
        raise ConfigError("opponents=[] is not allowed: name at least one of "
                          + ", ".join(EVAL_OPPONENT_NAMES))
    for name in cfg.opponents:
        _check_eval_opponent("opponents", name)


def validate_env(cfg: DictConfig) -> None:
    _check(cfg, "env.max_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "env.map_size", lambda x: int(x) == x and 20 <= x <= 500,
           "an integer in [20, 500] (smaller maps cannot hold 81 agents per team)")
    _check(cfg, "seed", lambda x: int(x) == x and x >= 0, "an integer >= 0")


def check_group_choices(overrides: list[str]) -> None:
    """Unknown options of a config group (``algo=nope``), comma sweeps included; the groups
    are conf/'s and the sweep groups of multirun_sweeps/ (``+sweep=...``, ``+budget=...``)."""
    dirs = [CONF_DIR, SWEEPS_DIR]
    groups = {p.name for d in dirs if d.is_dir() for p in d.iterdir()
              if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    for arg in overrides:
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or any(ch in value for ch in "()[]{}*$"):
            continue
        options = sorted({p.stem for d in dirs for p in (d / key).glob("*.yaml")
                          if not p.stem.startswith("_")})  # _name: a part, not an option
        for choice in value.split(","):
            if choice and choice != "null" and choice not in options:
                raise ConfigError(f"{key}={choice!r} is not an option of '{key}' "
                                  f"(choose from: {', '.join(options)})")


def compose_overrides(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose the configuration as Hydra will, turning its errors into one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from hydra.errors import OverrideParseException

    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the override: {str(e).splitlines()[0]}") from None
    except MissingConfigException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except ConfigCompositionException as e:
        msg = str(e)
        if msg.startswith("Could not override"):
            key = msg.split("'")[1]
            raise ConfigError(f"{key}: no such key (check the spelling; `+{key}=...` adds a "
                              f"new key)") from None
        raise ConfigError(msg.splitlines()[0]) from None


def check_creatable(key: str, path: str) -> None:
    """Can the output folder be created and written? (Leaves nothing behind.)"""
    if "${" in path:
        return  # interpolated (e.g. ${now:...}): Hydra resolves it later
    # quoted, as Lightning's DDP launcher passes it to the processes it starts
    target = Path(os.path.abspath(path.strip("\"'")))
    created = []
    try:
        for d in [*reversed(target.parents), target]:
            if not d.exists():
                d.mkdir()
                created.append(d)
        probe = target / ".battle-rl-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{key}={path} is not writable: {e.strerror}") from None
    finally:
        for d in reversed(created):
            d.rmdir()


def precheck(config_name: str, argv: list[str], validator) -> None:
    """Everything that can be checked before Hydra starts (and creates any folder).

    Single runs are composed and validated in full; in a multirun the group options are
    checked and each job validates its own values.
    """
    for arg in argv:
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
            check_creatable(*arg.split("=", 1))
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.")
                 and not a.startswith("+hydra")]
    if multirun:
        check_group_choices(overrides)
        return
    cfg = compose_overrides(config_name, overrides)
    validator(cfg)


def fail(message: str, code: int = 2):
    """Print one line to stderr and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get("BATTLE_RL_DEBUG") == "1" or "debug=true" in argv
