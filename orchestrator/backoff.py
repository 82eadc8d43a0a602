"""The one backoff of the orchestrator: how long to wait before the next
attempt of something that failed (a retried transaction, a lost connection,
a loop or a part of `up` that ended).

The n-th wait is ``base * 2**(n-1)``, capped at ``cap``, plus 0-10 % of it as
jitter, so that workers that failed together do not come back together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

JITTER = 0.10
# 2**62 times any base already exceeds every cap; beyond it the float would overflow.
_MAX_DOUBLINGS = 62


def delay(attempt: int, base: float, cap: float = math.inf, *,
          rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempt``-th failure (1-based)."""
    nominal = min(cap, base * 2 ** min(max(attempt, 1) - 1, _MAX_DOUBLINGS))
    return nominal * (1.0 + JITTER * rand())
