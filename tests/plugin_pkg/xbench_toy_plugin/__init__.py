"""A toy xbench plugin. The method and the task type live in modules of their own, so that xbench
imports each only when a run uses it."""
