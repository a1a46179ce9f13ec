"""What the entry points share: Hydra's command line, one-line errors for bad input before
any work starts, and a terminal without other libraries' chatter."""

from __future__ import annotations

import functools
import inspect
import sys

from battle_rl.config import debug_enabled, fail, precheck
from battle_rl.errors import ConfigError, PolicyLoadError

USER_ERRORS = (ConfigError, PolicyLoadError, FileNotFoundError, FloatingPointError)


def entry_point(hydra_main, config_name: str, validator, rewrite_argv=None):
    """Run a ``@hydra.main`` function after checking the command line.

    The command line is read by Hydra's own parser, so every Hydra flag means what Hydra's
    documentation says. ``rewrite_argv`` may rewrite the overrides first (``resume=`` replays
    a run's command); then the configuration is composed and validated (``precheck``): a bad
    command ends with one line on stderr and exit status 2, before Hydra creates any folder.
    """
    from hydra._internal.utils import get_args_parser

    script = inspect.getfile(inspect.unwrap(hydra_main))  # config_path is relative to it

    @functools.wraps(hydra_main)
    def run():
        args = get_args_parser().parse_args(sys.argv[1:])
        try:
            if rewrite_argv is not None:
                new = rewrite_argv(list(args.overrides or []))
                sys.argv[1:] = replace_overrides(sys.argv[1:], args.overrides or [], new)
                args.overrides = new
            precheck(config_name, args, validator, script, "conf")
        except USER_ERRORS as e:
            if debug_enabled():
                raise
            fail(str(e))
        return hydra_main()

    return run


def replace_overrides(argv: list[str], old: list[str], new: list[str]) -> list[str]:
    """The command line with its overrides ``old`` replaced by ``new`` (flags kept)."""
    rest = list(argv)
    for arg in old:
        rest.remove(arg)
    return rest + list(new)


def guarded(task):
    """Decorate the task function (inside Hydra) so user errors print one line, and other
    libraries' notices stay quiet unless ``debug=true``."""

    @functools.wraps(task)
    def wrapper(cfg):
        debug = bool(cfg.get("debug", False)) or debug_enabled()
        quiet_libraries(debug)
        try:
            return task(cfg)
        except USER_ERRORS as e:
            if debug:
                raise
            fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


# Warnings of other libraries that concern their own code, not a battle-rl user
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's _pytree on new torch
)


def quiet_libraries(debug: bool = False) -> None:
    """Keep other libraries' notices off the terminal (``debug=true`` keeps them all).

    Hydra's console handler shows warnings and errors only, so Lightning's info lines
    (accelerators found, a logger advertised, checkpoint defaults) stay in the run's log file
    (``train.log`` / ``evaluate.log``) and off the screen; the warnings above are ignored.
    W&B's own messages are set by ``loggers.make_logger`` (``wandb.Settings(silent=...)``).
    """
    import logging
    import warnings

    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.NOTSET if debug else logging.WARNING)
    if not debug:
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
