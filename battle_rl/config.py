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


class ConfigError(ValueError):
    """A bad configuration value; its message is the one line shown to the user."""


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
        good = ok(value)
    except TypeError:
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
    _check(cfg, "eval.final_episodes", lambda x: int(x) == x and x >= 0, "an integer >= 0")
    _check(cfg, "eval.stop_win_rate", lambda x: 0.0 < float(x) <= 1.0, "in (0, 1] or null")
    _check(cfg, "eval.max_train_seconds", lambda x: float(x) > 0, "seconds > 0, or null")
    _check(cfg, "threads", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    for name, w in (_get(cfg, "opponent.weights") or {}).items():
        if name not in ("random", "pretrained", "final"):
            raise ConfigError(f"opponent.weights.{name}: unknown opponent "
                              f"(choose from: random, pretrained, final)")
        _check(cfg, f"opponent.weights.{name}", lambda x: float(x) >= 0, "a weight >= 0")


def validate_env(cfg: DictConfig) -> None:
    _check(cfg, "env.max_cycles", lambda x: int(x) == x and x >= 1, "an integer >= 1")
    _check(cfg, "env.map_size", lambda x: int(x) == x and 20 <= x <= 500,
           "an integer in [20, 500] (smaller maps cannot hold 81 agents per team)")
    _check(cfg, "seed", lambda x: int(x) == x and x >= 0, "an integer >= 0")


def check_group_choices(argv: list[str]) -> None:
    """Unknown options of a config group (``algo=nope``), reported in one line.

    Hydra would print a multi-line search-path dump; this checks ``group=option`` overrides
    (comma lists too) against the files in ``conf/`` before Hydra starts.
    """
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "hydra.", "+hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or any(ch in value for ch in "()[]{}*$"):
            continue
        options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice and choice != "null" and choice not in options:
                raise ConfigError(f"{key}={choice!r} is not an option of '{key}' "
                                  f"(choose from: {', '.join(options)})")


def fail(message: str, code: int = 2):
    """Print one line to stderr and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get("BATTLE_RL_DEBUG") == "1" or "debug=true" in argv
