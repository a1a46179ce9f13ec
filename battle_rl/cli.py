"""What the entry points share: one-line errors for bad input, before any work starts."""

from __future__ import annotations

import functools
import sys

from battle_rl.config import debug_enabled, fail, precheck
from battle_rl.errors import ConfigError, PolicyLoadError

USER_ERRORS = (ConfigError, PolicyLoadError, FileNotFoundError, FloatingPointError)


def entry_point(hydra_main, config_name: str, validator, rewrite_argv=None):
    """Run a ``@hydra.main`` function after checking the command line.

    ``rewrite_argv`` may rewrite the overrides first (``resume=`` replays a run's command);
    then the configuration is composed and validated (``precheck``): a bad command ends with
    one line on stderr and exit status 2, before Hydra creates any folder.
    """

    @functools.wraps(hydra_main)
    def run():
        try:
            if rewrite_argv is not None:
                sys.argv[1:] = rewrite_argv(sys.argv[1:])
            precheck(config_name, sys.argv[1:], validator)
        except USER_ERRORS as e:
            if debug_enabled():
                raise
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
