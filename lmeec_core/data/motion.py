"""Endless, deterministic motion signals for the synthetic scenes.

Both signals are pure functions of time whose randomness is drawn from a seed and the index of the
time interval, so a scene can be rendered from any frame, streamed for hours, and reproduced exactly
without keeping any history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmeec_core.errors import ConfigError


def _rng(key: tuple[int, ...], index: int) -> np.random.Generator:
    """Generator for one interval; `index` may be -1 (the waypoint before time 0)."""
    return np.random.default_rng([*key, index + 1])


def smoothstep(x: np.ndarray | float) -> np.ndarray | float:
    """0 below 0, 1 above 1, and a C1-smooth ramp in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class SmoothWalk:
    """A smooth random curve: Catmull-Rom through waypoints drawn uniformly in a box every interval."""

    key: tuple[int, ...]
    interval_s: float
    low: tuple[float, ...]
    high: tuple[float, ...]

    def waypoint(self, index: int) -> np.ndarray:
        return _rng(self.key, index).uniform(self.low, self.high)

    def __call__(self, t: float) -> np.ndarray:
        k = int(np.floor(t / self.interval_s))
        s = t / self.interval_s - k
        p0, p1, p2, p3 = (self.waypoint(k + i) for i in (-1, 0, 1, 2))
        return 0.5 * (
            2.0 * p1
            + (p2 - p0) * s
            + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * s**2
            + (3.0 * p1 - p0 - 3.0 * p2 + p3) * s**3
        )


@dataclass(frozen=True)
class PeriodicEvent:
    """Weight in 0..1 of an event that happens once per period: ramp up, hold, ramp down.

    Start and hold time are drawn per period from the given ranges; the event always finishes
    within its period so that consecutive periods never interfere.
    """

    key: tuple[int, ...]
    period_s: float
    start_s: tuple[float, float]  # range of the start within the period
    hold_s: tuple[float, float]  # range of how long the full weight lasts
    ramp_s: float

    def __post_init__(self) -> None:
        if self.start_s[1] + self.hold_s[1] + 2.0 * self.ramp_s > self.period_s:
            raise ConfigError(
                f"event {self} may end after its period of {self.period_s} s; expected "
                "start + hold + 2 * ramp within the period"
            )

    def __call__(self, t: float) -> float:
        k = int(np.floor(t / self.period_s))
        rng = _rng(self.key, k)
        start = k * self.period_s + rng.uniform(*self.start_s)
        hold = rng.uniform(*self.hold_s)
        rise = smoothstep((t - start) / self.ramp_s)
        fall = smoothstep((start + self.ramp_s + hold + self.ramp_s - t) / self.ramp_s)
        return float(min(rise, fall))
