"""What loading needs beyond SB3: recognising an algorithm's zip, one-line reasons, sb3-contrib's optimiser state."""

import pickle
import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import torch as th
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import TensorDict

#: What loading a file that is not a TRPO model can raise, turned into one ValueError that says so.
LOAD_ERRORS = (
    AssertionError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RuntimeError,
    MemoryError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    pickle.UnpicklingError,
)


def load_error_reason(error: BaseException) -> str:
    """What went wrong reading a file, in one line: for torch's weights-only loader refusing a pickled object, the
    object it met (its message runs to several paragraphs)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError):
        found = [line.strip() for line in text.splitlines() if line.strip().startswith("WeightsUnpickler error:")]
        detail = found[0].split(":", 1)[1].strip().split(". ")[0] if found else text.splitlines()[0] if text else ""
        return f"its tensors hold a pickled object that is not a tensor ({detail}); torch's weights-only loader refused it"
    return text.splitlines()[0] if text else type(error).__name__


def refuse_foreign(saved: set[str], required: frozenset[str], foreign: frozenset[str]) -> None:
    """
    Raise a ValueError when a zip that ``saved`` these attributes lacks any of the ``required`` hyperparameters or
    holds any of the ``foreign`` ones (another algorithm's): another algorithm saved it.
    """
    missing, holds = sorted(required - saved), sorted(foreign & saved)
    if missing:
        raise ValueError(f"it was saved by another algorithm (it has no {', '.join(missing)})")
    if holds:
        raise ValueError(f"it was saved by another algorithm (it has {', '.join(holds)})")


#: Hyperparameters that every zip of this package's TRPO holds and sb3-contrib's TRPO does not have.
OWN_HYPERPARAMETERS = frozenset({"fvp_method", "cg_residual_tol", "line_search_accept_ratio"})


def saved_by_sb3_contrib(saved: set[str]) -> bool:
    """Whether a TRPO zip that ``saved`` these attributes was saved by sb3-contrib's TRPO (it has none of
    :data:`OWN_HYPERPARAMETERS`)."""
    return not OWN_HYPERPARAMETERS & saved


def _is_optimizer_state(state: Any) -> bool:
    """A state dict as torch's optimisers write it: a dict of per-parameter states and a list of groups."""
    return (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list)
        and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in state["param_groups"])
    )


def critic_optimizer_state(state: Any, all_params: Sequence[th.Tensor], critic_params: Sequence[th.Tensor]) -> Any:
    """
    An optimiser state saved over all the policy's parameters (as sb3-contrib's TRPO saves it) narrowed to the
    critic's parameters, keeping their moments; any other state as it is, for SB3 and torch to judge (and refuse)
    as they would for any algorithm.
    """
    if not _is_optimizer_state(state) or len(all_params) == len(critic_params):
        return state
    groups = state["param_groups"]
    if not (len(groups) == 1 and len(groups[0]["params"]) == len(all_params)):
        return state
    position = {id(param): index for index, param in enumerate(all_params)}
    kept = [position[id(param)] for param in critic_params]
    return {
        "state": {new: state["state"][old] for new, old in enumerate(kept) if old in state["state"]},
        "param_groups": [{**groups[0], "params": list(range(len(kept)))}],
    }


def with_critic_optimizer_state(
    load_path_or_dict: str | TensorDict,
    device: th.device | str,
    all_params: Sequence[th.Tensor],
    critic_params: Sequence[th.Tensor],
) -> TensorDict:
    """The parameters to load (a dict, or read from a zip), their optimiser state passed to :func:`critic_optimizer_state`."""
    if isinstance(load_path_or_dict, dict):
        params = dict(load_path_or_dict)
    else:
        _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
    if "policy.optimizer" in params:
        params["policy.optimizer"] = critic_optimizer_state(params["policy.optimizer"], all_params, critic_params)
    return params
