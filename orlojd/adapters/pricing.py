"""Model prices from litellm's price table: what a call cost, what an estimate would cost.

Called by the budget ledger (``adapters/budgets.py``) when it reserves a call (the estimate,
priced as prompt tokens) and when it settles one (the provider's reported usage). A model
with no entry in the table (the offline ``scripted/...`` models, a private deployment) has
no price: ``None``, never a guessed 0; the ledger then refuses calls under a cost limit.

litellm is imported on first use (importing it takes seconds). Its price table is the one
shipped with the pinned litellm release: ``LITELLM_LOCAL_MODEL_COST_MAP`` defaults to true
here, so prices do not change with a download at import time (and no import waits on the
network); set it to false in the environment to let litellm fetch its newest table.
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["cost_of", "estimate_cost", "has_price"]


@functools.cache
def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


@functools.lru_cache(maxsize=512)
def has_price(model: str) -> bool:
    """Whether litellm's price table has per-token prices for ``model`` (with or without its provider prefix)."""
    litellm = _litellm()
    # Look the name up first: litellm prints a banner to stdout for a provider it does not know.
    if not model or not ({model, model.split("/", 1)[-1]} & litellm.model_cost.keys()):
        return False
    try:
        info = litellm.get_model_info(model=model)
    except Exception:  # litellm raises a bare Exception for a model it does not know
        return False
    return info.get("input_cost_per_token") is not None and info.get("output_cost_per_token") is not None


def cost_of(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The cost in USD of a call with this usage; ``None`` when the model has no price."""
    if not has_price(model):
        return None
    try:
        prompt_cost, completion_cost = _litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        return None
    return float(prompt_cost) + float(completion_cost)


def estimate_cost(model: str, tokens: int) -> float | None:
    """The cost of an estimate, priced as ``tokens`` prompt tokens; ``None`` when the model has no price."""
    return cost_of(model, tokens, 0)
