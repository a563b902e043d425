"""A task type of the user's own: here simply the built-in token labelling under another name."""
from __future__ import annotations

from xbench.tasktypes.token_labelling import TokenLabelling


class ToyTagging(TokenLabelling):
    name = "toy-tagging"
    # The shipped profiles have no block for a plugin's task type: it brings its own, per profile.
    finetune_defaults = {"smoke": {"lr": 3.0e-3, "batch_size": 32, "max_steps": 300, "warmup_ratio": 0.1}}
