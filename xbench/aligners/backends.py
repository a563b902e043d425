"""Word aligners by name: the one place a configuration string becomes a backend."""
from __future__ import annotations

import importlib.util
from typing import Any

from xbench.aligners.base import WordAligner
from xbench.aligners.eflomal_backend import PACKAGE, EflomalAligner, missing_package_error
from xbench.aligners.exact import ExactAligner
from xbench.aligners.symmetrise import DEFAULT, check_method
from xbench.errors import XbenchError

# fast_align, GIZA++ and the neural aligners are optional backends not built yet.
BACKENDS = ("eflomal", "exact")


def get_aligner(name: str, symmetrisation: str = DEFAULT, **options: Any) -> WordAligner:
    """The backend `name` with `symmetrisation` (grow-diag-final-and, intersection or union).

    `options` go to the backend: eflomal's `model`, `n_samplers`, `null_prior`, `rel_iterations`;
    the exact backend's `gold` mapping of (source words, target words) to links. The exact backend
    ignores `symmetrisation` (gold links are symmetric already) but still checks the name.
    """
    check_method(symmetrisation)
    if name == "eflomal":
        # Asked here, not at the first align call, so that a run fails before its training stages.
        if importlib.util.find_spec(PACKAGE) is None:
            raise missing_package_error()
        return EflomalAligner(symmetrisation, **options)
    if name == "exact":
        if "gold" not in options:
            raise XbenchError("the exact aligner needs its gold links: get_aligner('exact', gold={(src_words, "
                              "tgt_words): [(i, j), ...]}); it exists for unit tests on the toy bilingual world")
        return ExactAligner(**options)
    raise XbenchError(f"unknown word aligner {name!r}; valid names: {', '.join(BACKENDS)}")
