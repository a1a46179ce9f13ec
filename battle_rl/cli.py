"""What the entry points share: one-line errors for bad input, before any work starts."""

from __future__ import annotations

import functools
import sys

from battle_rl.config import ConfigError, check_group_choices, debug_enabled, fail
from battle_rl.networks import PolicyLoadError

USER_ERRORS = (ConfigError, PolicyLoadError, FileNotFoundError)


def entry_point(hydra_main):
    """Wrap a ``@hydra.main`` function: check group options first, turn user errors into one
    line on stderr with exit status 2 (``debug=true`` or BATTLE_RL_DEBUG=1 re-raises)."""

    @functools.wraps(hydra_main)
    def run():
        try:
            check_group_choices(sys.argv[1:])
        except ConfigError as e:
            fail(str(e))
        return hydra_main()

    return run


def guarded(task):
    """Decorate the task function (inside Hydra) so user errors print one line."""

    @functools.wraps(task)
    def wrapper(cfg):
        try:
            return task(cfg)
        except USER_ERRORS as e:
            if cfg.get("debug", False) or debug_enabled():
                raise
            fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper
