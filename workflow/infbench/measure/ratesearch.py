"""The bracketing search for the highest request rate that passes, shared by the sweep and capacity
kinds: what to try next given what passed and failed, nothing about how a rate is tried.

Double from the start rate while steps pass (up to max_rate); when the start rate already fails,
halve while steps fail (down to min_rate, if one is given); then bisect between the highest pass
and the lowest fail, at most `refine_steps` times, stopping sooner once they are within `precision`
of each other (relative to the pass). A saturated step is a failing step, so the search never goes
above the first saturated rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bracket:
    passed: float | None  # the highest rate that passed
    failed: float | None  # the lowest rate above it that failed
    tried: tuple[float, ...]  # every rate tried, in order


def bracket_search(
    passes: Callable[[float], bool],
    start_rate: float,
    max_rate: float,
    refine_steps: int,
    min_rate: float | None = None,
    precision: float = 0.0,
) -> Bracket:
    """Search with `passes(rate)` (which runs the step); see the module doc."""
    if start_rate <= 0 or max_rate < start_rate:
        raise ValueError(f"rate search: need 0 < start_rate <= max_rate, got {start_rate:g} and {max_rate:g}")
    tried: list[float] = []

    def attempt(rate: float) -> bool:
        tried.append(rate)
        return passes(rate)

    passed: float | None = None
    failed: float | None = None
    if attempt(start_rate):
        passed = start_rate
        while passed * 2 <= max_rate:
            if attempt(passed * 2):
                passed *= 2
            else:
                failed = passed * 2
                break
    else:
        failed = start_rate
        while min_rate is not None and failed / 2 >= min_rate:
            if attempt(failed / 2):
                passed = failed / 2
                break
            failed /= 2
    if passed is not None and failed is not None:
        for _ in range(refine_steps):
            if failed - passed <= precision * passed:
                break
            mid = round((passed + failed) / 2, 3)
            if mid in (passed, failed):
                break  # the bracket is as narrow as rates are written
            if attempt(mid):
                passed = mid
            else:
                failed = mid
    return Bracket(passed, failed, tuple(tried))
