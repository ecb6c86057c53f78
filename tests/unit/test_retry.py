"""Unit tests of the retry backoff policy."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import ConfigurationError
from conveyor.retry import Backoff


def no_jitter_draw() -> float:
    return 0.0


def full_jitter_draw() -> float:
    return 1.0


def test_defaults() -> None:
    assert Backoff() == Backoff(base=1.0, factor=2.0, max_delay=300.0, jitter=0.5)


@pytest.mark.parametrize("attempt", range(1, 11))
def test_delay_is_exponential(attempt: int) -> None:
    policy = Backoff(base=1.5, factor=3.0, max_delay=10**9, jitter=0.0)
    assert policy.delay(attempt) == pytest.approx(1.5 * 3.0 ** (attempt - 1))


def test_first_retry_waits_base() -> None:
    assert Backoff(base=7.0, jitter=0.0).delay(1) == 7.0


def test_delay_doubles_with_default_factor() -> None:
    policy = Backoff(jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempt_below_one_waits_base(attempt: int) -> None:
    assert Backoff(base=2.0, jitter=0.0).delay(attempt) == 2.0


def test_delay_capped_at_max_delay() -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=60.0, jitter=0.0)
    assert policy.delay(6) == 32.0
    assert policy.delay(7) == 60.0  # 64 capped
    assert policy.delay(30) == 60.0


def test_max_delay_zero_means_no_wait() -> None:
    assert Backoff(base=5.0, max_delay=0.0).delay(3, rand=no_jitter_draw) == 0.0


def test_factor_one_is_constant_delay() -> None:
    policy = Backoff(base=4.0, factor=1.0, jitter=0.0)
    assert {policy.delay(n) for n in range(1, 40)} == {4.0}


@pytest.mark.parametrize("attempt", [64, 65, 100, 1000, 10**6, 10**18])
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=300.0, jitter=0.0)
    delay = policy.delay(attempt)
    assert math.isfinite(delay)
    assert delay == 300.0


@pytest.mark.parametrize("attempt", range(60, 70))
def test_large_factor_near_exponent_limit(attempt: int) -> None:
    policy = Backoff(base=1.0, factor=10.0, max_delay=3600.0, jitter=0.0)
    assert policy.delay(attempt) == 3600.0


# --------------------------------------------------------------------------------------------
# jitter


def test_rand_zero_gives_full_delay() -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=300.0, jitter=0.5)
    assert policy.delay(4, rand=no_jitter_draw) == 8.0


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5, 1.0])
def test_rand_one_gives_one_minus_jitter_of_delay(jitter: float) -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=300.0, jitter=jitter)
    assert policy.delay(4, rand=full_jitter_draw) == pytest.approx((1 - jitter) * 8.0)


def test_rand_half_gives_midpoint() -> None:
    policy = Backoff(base=10.0, jitter=0.5)
    assert policy.delay(1, rand=lambda: 0.5) == pytest.approx(7.5)


def test_jitter_applies_after_the_cap() -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=100.0, jitter=0.5)
    assert policy.delay(20, rand=full_jitter_draw) == pytest.approx(50.0)


def test_zero_jitter_ignores_rand() -> None:
    policy = Backoff(jitter=0.0)
    assert policy.delay(3, rand=random.random) == 4.0


def test_default_rand_stays_within_jitter_bounds() -> None:
    policy = Backoff(base=1.0, factor=2.0, max_delay=300.0, jitter=0.5)
    draws = [policy.delay(5) for _ in range(500)]
    assert all(8.0 <= d <= 16.0 for d in draws)
    assert len(set(draws)) > 1  # really randomised


def test_rand_is_called_once_per_delay() -> None:
    calls: list[int] = []

    def rand() -> float:
        calls.append(1)
        return 0.25

    Backoff().delay(2, rand=rand)
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"factor": 0.5},
        {"factor": 0.0},
        {"max_delay": -0.001},
        {"jitter": -0.1},
        {"jitter": 1.01},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_configs_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="backoff needs"):
        Backoff(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0.0}, {"factor": 1.0}, {"max_delay": 0.0}, {"jitter": 0.0}, {"jitter": 1.0}],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_boundary_configs_accepted(kwargs: dict[str, float]) -> None:
    policy = Backoff(**kwargs)
    assert policy.delay(3, rand=no_jitter_draw) >= 0.0


def test_backoff_is_immutable() -> None:
    policy = Backoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.base = 10.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# to_dict / from_dict


@pytest.mark.parametrize(
    "policy",
    [
        Backoff(),
        Backoff(base=0.0, factor=1.0, max_delay=0.0, jitter=0.0),
        Backoff(base=2.5, factor=3.0, max_delay=3600.0, jitter=1.0),
    ],
    ids=repr,
)
def test_to_dict_from_dict_round_trip(policy: Backoff) -> None:
    data = policy.to_dict()
    assert data == {
        "base": policy.base,
        "factor": policy.factor,
        "max_delay": policy.max_delay,
        "jitter": policy.jitter,
    }
    assert Backoff.from_dict(data) == policy


@pytest.mark.parametrize("data", [None, {}])
def test_from_dict_of_nothing_is_default(data: dict[str, Any] | None) -> None:
    assert Backoff.from_dict(data) == Backoff()


def test_from_dict_fills_missing_fields_with_defaults() -> None:
    assert Backoff.from_dict({"max_delay": 10}) == Backoff(max_delay=10.0)


def test_from_dict_ignores_unknown_keys() -> None:
    assert Backoff.from_dict({"base": 3, "strategy": "linear"}) == Backoff(base=3.0)


def test_from_dict_coerces_numbers_to_float() -> None:
    policy = Backoff.from_dict({"base": 2, "factor": "3"})
    assert policy == Backoff(base=2.0, factor=3.0)
    assert isinstance(policy.base, float)
    assert isinstance(policy.factor, float)


def test_from_dict_validates() -> None:
    with pytest.raises(ConfigurationError):
        Backoff.from_dict({"jitter": 2})


# --------------------------------------------------------------------------------------------
# edge cases of the policy's validation and arithmetic


def test_nan_jitter_rejected() -> None:
    with pytest.raises(ConfigurationError):
        Backoff(jitter=math.nan)


@pytest.mark.parametrize("field", ["base", "factor", "max_delay"])
def test_nan_config_rejected(field: str) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**{field: math.nan})


@pytest.mark.parametrize("value", ["abc", None, [1]], ids=repr)
def test_from_dict_with_non_numbers_raises_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        Backoff.from_dict({"base": value})


def test_large_factor_does_not_overflow() -> None:
    policy = Backoff(base=1.0, factor=1e10, max_delay=300.0, jitter=0.0)
    assert policy.delay(40) == 300.0


@pytest.mark.parametrize(
    ("base", "factor", "expected"), [(4.0, 1.0, 4.0), (0.0, 2.0, 0.0), (1.0, 1.001, 1.0663)]
)
def test_delay_past_attempt_64_follows_the_formula(
    base: float, factor: float, expected: float
) -> None:
    policy = Backoff(base=base, factor=factor, max_delay=300.0, jitter=0.0)
    assert policy.delay(65) == pytest.approx(expected, rel=1e-3)


# --------------------------------------------------------------------------------------------
# properties

policies = st.builds(
    Backoff,
    base=st.floats(min_value=0.001, max_value=100.0),
    factor=st.floats(min_value=2.0, max_value=4.0),
    max_delay=st.floats(min_value=0.0, max_value=10**6),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)


@settings(max_examples=300)
@given(policies, st.integers(min_value=1, max_value=200), st.floats(min_value=0.0, max_value=1.0))
def test_delay_follows_formula(policy: Backoff, attempt: int, draw: float) -> None:
    delay = policy.delay(attempt, rand=lambda: draw)
    capped = min(policy.max_delay, policy.base * policy.factor ** min(attempt - 1, 63))
    assert delay == pytest.approx(capped * (1 - policy.jitter * draw))
    assert 0.0 <= delay <= policy.max_delay
    assert delay >= (1 - policy.jitter) * capped - 1e-9


@settings(max_examples=200)
@given(policies, st.integers(min_value=1, max_value=200), st.floats(min_value=0.0, max_value=1.0))
def test_delay_never_decreases_with_attempt(policy: Backoff, attempt: int, draw: float) -> None:
    assert policy.delay(attempt, rand=lambda: draw) <= policy.delay(attempt + 1, rand=lambda: draw)


@settings(max_examples=200)
@given(policies)
def test_round_trip_property(policy: Backoff) -> None:
    assert Backoff.from_dict(policy.to_dict()) == policy
