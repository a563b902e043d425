"""Language sampling with smoothing (docs/methods/README.md; docs/methods/meta.md, "Testable properties")."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from xbench.data.sampler import LanguageSampler, language_probs
from xbench.errors import ConfigError, XbenchError

SIZES = {"en": 700_000, "de": 200_000, "zh": 90_000, "sw": 10_000}


def test_probabilities_follow_the_formula():
    q = language_probs(SIZES, 0.5)
    total = sum(SIZES.values())
    z = sum((n / total) ** 0.5 for n in SIZES.values())
    for lang, n in SIZES.items():
        assert q[lang] == pytest.approx((n / total) ** 0.5 / z, rel=1e-12)
    assert list(q) == list(SIZES)
    assert language_probs(SIZES, 1.0) == pytest.approx({k: v / total for k, v in SIZES.items()})
    assert language_probs(SIZES, 0.0) == pytest.approx({k: 0.25 for k in SIZES})


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_empirical_frequencies_match_q(alpha):
    sampler = LanguageSampler(SIZES, alpha, seed=1234)
    n = 100_000
    counts = Counter(sampler.sample() for _ in range(n))
    q = language_probs(SIZES, alpha)
    for lang in SIZES:
        assert abs(counts[lang] / n - q[lang]) < 0.01, (lang, counts[lang] / n, q[lang])
    total = sum(SIZES.values())
    independent = {
        1.0: {k: v / total for k, v in SIZES.items()},  # α = 1 reproduces p
        0.0: {k: 1 / len(SIZES) for k in SIZES},  # α = 0 is uniform
    }.get(alpha)
    if independent is not None:
        for lang in SIZES:
            assert abs(counts[lang] / n - independent[lang]) < 0.01


def test_same_seed_same_sequence_and_state_round_trip():
    a, b = LanguageSampler(SIZES, 0.5, seed=7), LanguageSampler(SIZES, 0.5, seed=7)
    assert [a.sample() for _ in range(200)] == [b.sample() for _ in range(200)]

    state = json.loads(json.dumps(a.state_dict()))  # checkpoints store it as JSON
    expected = [a.sample() for _ in range(500)]
    resumed = LanguageSampler(SIZES, 0.5, seed=999)  # the seed is irrelevant once state is loaded
    resumed.load_state_dict(state)
    assert [resumed.sample() for _ in range(500)] == expected
    assert resumed.draws == a.draws == 700


def test_empty_language_is_never_drawn_even_uniformly():
    sizes = {"en": 10, "xx": 0, "de": 10}
    assert language_probs(sizes, 0.0) == {"en": 0.5, "xx": 0.0, "de": 0.5}
    sampler = LanguageSampler(sizes, 0.0, seed=0)
    assert "xx" not in {sampler.sample() for _ in range(2000)}


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError):
        language_probs({}, 0.5)
    with pytest.raises(ConfigError):
        language_probs({"en": 1}, -0.1)
    with pytest.raises(ConfigError):
        language_probs({"en": 0, "de": 0}, 0.5)
    other = LanguageSampler({"en": 1, "de": 3}, 0.5, seed=0)
    with pytest.raises(XbenchError, match="different languages"):
        other.load_state_dict(LanguageSampler(SIZES, 0.5, seed=0).state_dict())
