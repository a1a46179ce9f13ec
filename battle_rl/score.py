"""The figure a run is judged by, and the identity of its configuration in a sweep.

Light on purpose (no torch, no game engine): ``train.py`` returns :func:`kill_margin_score`,
and the sweep report (``python -m battle_rl.outputs.report``) recomputes it from ``eval.json``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

TEAM_SIZE = 81  # agents per team (battle_rl.env.TEAM_SIZE): the most kills a game can have

# keys that never make a configuration differ: the seed(s), and what only says where or how a
# job runs (the same keys the job folders leave out: conf/config.yaml, override_dirname)
SEED_KEYS = ("seed", "seeds", "job_seeds")
RUN_ONLY_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "logger", "trainer.accelerator", "threads",
                 "resume", "sweep", "budget", "print_config", "debug")
MAX_CONFIG_ID = 64  # W&B refuses a longer job_type


def kill_margin_score(table: Mapping[str, Mapping]) -> float:
    """The run's score: the mean over the table's opponents of the kill margin per game,
    ``(blue kills - red kills) / 81``, in [-1, 1].

    ``table`` is Table I (``eval.json``: per opponent the mean ``blue_kills`` and ``red_kills``
    per game, blue being the evaluated policy). +1: every game ends with the whole red team
    killed and no loss; 0: as many kills as losses; -1: the reverse of +1. Unlike a win
    rate it keeps ranking agents that win every game (81-0 ranks above 40-30) and agents that
    lose every game (to a stronger panel agent such as the shipped champion). Every opponent
    weighs the same. An empty table scores 0.
    """
    rows = [r for r in table.values() if "blue_kills" in r and "red_kills" in r]
    if not rows:
        return 0.0
    return sum((r["blue_kills"] - r["red_kills"]) / TEAM_SIZE for r in rows) / len(rows)


def kill_margins(table: Mapping[str, Mapping]) -> dict[str, float]:
    """Per opponent, the kill margin per game / 81 (the terms of :func:`kill_margin_score`)."""
    return {k: (r["blue_kills"] - r["red_kills"]) / TEAM_SIZE for k, r in table.items()
            if "blue_kills" in r and "red_kills" in r}


def worst_win_rate(table: Mapping[str, Mapping]) -> float | None:
    """The lowest win rate over the table's opponents (the objective before the score)."""
    rates = [r["win"] / r["episodes"] for r in table.values() if r.get("episodes")]
    return min(rates) if rates else None


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)  # sweepers escape ':', ',', '=' ... in values


def config_overrides(overrides: Iterable[str], exclude: Iterable[str] = RUN_ONLY_KEYS
                     ) -> list[str]:
    """The overrides that make a job's configuration: ``key=value`` sorted by key, without
    the seed keys (:data:`SEED_KEYS`), ``hydra.*`` and the ``exclude`` keys."""
    drop = set(exclude) | set(SEED_KEYS)
    kept = {}
    for text in overrides:
        key, _, value = str(text).partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or key in drop:
            continue
        kept[key] = _unescape(value)
    return [f"{k}={kept[k]}" for k in sorted(kept)]


def config_id(overrides: Iterable[str], exclude: Iterable[str] = RUN_ONLY_KEYS) -> str:
    """A short, stable name of a job's configuration: its overrides but the seed, as written
    (``hparams.gamma=0.9,hparams.tau=0.05``; ``defaults`` for none). Jobs that differ only in
    the seed share it. Where that text is longer than 64 characters or holds a path, its
    beginning without the paths, ``-`` and 8 hex digits of a hash of the whole text."""
    items = config_overrides(overrides, exclude)
    full = ",".join(items) or "defaults"
    readable = ",".join(i for i in items if "/" not in i.partition("=")[2]) or "defaults"
    if readable == full and len(full) <= MAX_CONFIG_ID:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{readable[:MAX_CONFIG_ID - 9].rstrip(',')}-{digest}"
