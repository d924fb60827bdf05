"""A numeric range, closed or open at each end, that checks a value and names itself: the one form in which
a setting's range is declared (by the module that owns the rule) and then enforced by the configuration,
the command line and the Slicer parameter node alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """Values ``low <= v <= high`` (``<`` at an open end); None leaves that side unbounded.

    Examples
    --------
    >>> M = Interval(0, 1, low_open=True)
    >>> str(M), M.contains(0), M.contains(1)
    ('(0, 1]', False, True)
    >>> Interval(1).problem(0), str(Interval(1))
    ('must be at least 1, got 0', '>= 1')
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a finite number inside the interval."""
        return self.problem(value) is None

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` (``must be ..., got ...``), or None when it lies inside."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"must be a number, got {value!r}"
        if math.isnan(number):
            return f"must be a number, got {value!r}"
        low_bad = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        high_bad = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if not (low_bad or high_bad):
            return None
        if self.low is not None and self.high is not None:
            return f"must lie in {self}, got {value}"
        if self.low is not None:
            return f"must be {'above' if self.low_open else 'at least'} {_num(self.low)}, got {value}"
        return f"must be {'below' if self.high_open else 'at most'} {_num(self.high)}, got {value}"

    def smallest(self, step: float) -> float | None:
        """The smallest value a widget stepping by ``step`` may show (the low end, or one step above it)."""
        if self.low is None:
            return None
        return self.low + step if self.low_open else self.low

    def largest(self, step: float) -> float | None:
        """The largest value a widget stepping by ``step`` may show."""
        if self.high is None:
            return None
        return self.high - step if self.high_open else self.high

    def __str__(self) -> str:
        if self.high is None:
            return "any number" if self.low is None else f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(value: float) -> str:
    return f"{value:g}"
