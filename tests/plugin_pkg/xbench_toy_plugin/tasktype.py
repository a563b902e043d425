"""A task type of the user's own: here simply the built-in token labelling under another name."""
from __future__ import annotations

from xbench.tasktypes.token_labelling import TokenLabelling


class ToyTagging(TokenLabelling):
    name = "toy-tagging"
