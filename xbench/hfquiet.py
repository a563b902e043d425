"""One place to silence transformers' chatter that is noise in xbench's own output."""
from __future__ import annotations


def quiet_transformers() -> None:
    # Loading an MLM checkpoint under a task head prints a load report of the fresh head, and
    # save/load print per-shard progress bars; xbench reports progress itself.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
