"""Opening ``.pt`` / ``.ckpt`` files without running code from them.

A PyTorch file is a pickle, and a pickle may name any Python function to call while it is
read. battle-rl therefore reads every file with ``torch.load(weights_only=True)``, whose
unpickler builds only tensors, containers and plain values and refuses everything else, and
lets through, besides, exactly the types that checkpoints of earlier battle-rl versions hold:

- numpy arrays of the numpy RNG state (numpy's own array rebuilding, uint32 only);
- the omegaconf containers Lightning pickled as hyper-parameters: these are read into inert
  stand-ins defined here (no omegaconf code runs) and turned into plain dicts and lists.

Checkpoints written now hold plain types only. Exported policies (TorchScript) are read by
``torch.jit.load`` instead (see ``battle_rl.networks.load_policy``), and Lightning's own
resume reads through :func:`torch_load` too (``SafeCheckpointIO`` in ``battle_rl.training``).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from battle_rl.errors import PolicyLoadError


class _Legacy:
    """An omegaconf object of an old checkpoint: keeps its pickled state, nothing more."""

    def __setstate__(self, state):
        self.state = state


class _DictConfig(_Legacy):
    pass


class _ListConfig(_Legacy):
    pass


class _ValueNode(_Legacy):
    pass


def _empty_defaultdict(*args):  # omegaconf's resolver cache: its factory is not needed
    return defaultdict()


# the numpy names rebuild the arrays of the numpy RNG state; the omegaconf names map to the
# stand-ins above, and the typing / builtins names, which omegaconf's metadata only refers to
# (key and element types), to an inert class
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
LEGACY_GLOBALS = [
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    (_reconstruct, "numpy.core.multiarray._reconstruct"),  # the name numpy 1.x pickles
    np.ndarray, np.dtype, type(np.dtype(np.uint32)),
    (_DictConfig, "omegaconf.dictconfig.DictConfig"),
    (_ListConfig, "omegaconf.listconfig.ListConfig"),
    (_ValueNode, "omegaconf.nodes.AnyNode"),
    (_Legacy, "omegaconf.base.Metadata"),
    (_Legacy, "omegaconf.base.ContainerMetadata"),
    (_Legacy, "typing.Any"),
    (_empty_defaultdict, "collections.defaultdict"),
    (_Legacy, "builtins.dict"), (_Legacy, "builtins.list"), (_Legacy, "builtins.int"),
]


def _plain(x):
    """The value an omegaconf stand-in held, as plain dicts, lists and values."""
    if isinstance(x, _DictConfig):
        return {k: _plain(v) for k, v in (x.state["_content"] or {}).items()}
    if isinstance(x, _ListConfig):
        return [_plain(v) for v in x.state["_content"] or []]
    if isinstance(x, _ValueNode):
        return x.state["_val"]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


# the lines torch.load wraps around every weights_only failure
TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def torch_load(path: str | Path):
    """``torch.load`` of a file that may come from anyone; a refusal is a one-line
    :class:`PolicyLoadError` naming the file."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS), warnings.catch_warnings():
            # its notes on odd files (a newer pickle protocol...) would break the one line
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "hyper_parameters" in obj:
            obj["hyper_parameters"] = _plain(obj["hyper_parameters"])
    except pickle.UnpicklingError as e:  # a refused object names its type or function
        refused = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'|function (\S+)", str(e))
        if refused is None:
            raise _unreadable(path, e) from None
        what = next(g for g in refused.groups() if g)
        raise PolicyLoadError(f"{path} holds Python objects that battle-rl will not unpickle "
                              f"({what}): not loaded, nothing in it was run") from None
    except Exception as e:  # zip, EOF and malformed-content errors mean the same to a user
        raise _unreadable(path, e) from None
    return obj


def _unreadable(path: Path, e: Exception) -> PolicyLoadError:
    lines = [ln.strip() for ln in str(e).splitlines()
             if ln.strip() and not ln.strip().startswith(TORCH_BOILERPLATE)]
    detail = lines[0].split(". ")[0] if lines else ""
    return PolicyLoadError(f"{path} is not a readable PyTorch file (corrupt or truncated?): "
                           + ": ".join(filter(None, [type(e).__name__, detail])))


def is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False

