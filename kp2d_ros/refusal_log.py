"""One log line per distinct reason for refusing input; the rest is counted, not logged.

A node fed bad input at camera rate must neither flood its log nor hide a reason behind
another one's throttle: each distinct reason (the refused thing and why, with its numbers
left out so that "1000 bytes" and "1003 bytes" are one reason) is logged the first time it
happens, with a pointer to the counts on /diagnostics; later occurrences are only counted.
At most ``max_reasons`` distinct reasons are logged per node, so that hostile input with
ever-new reasons cannot flood the log either.
"""

from __future__ import annotations

from collections import Counter
import re
import threading
from typing import Any

MAX_REASONS = 100
MAX_TEXT = 300
_NUMBERS = re.compile(r'-?\d+(\.\d+)?([eE][-+]?\d+)?')


def reason_key(what: str, why: str) -> tuple[str, str]:
    """What identifies a reason: the refused thing and the reason without its numbers."""
    return what, _NUMBERS.sub('#', why)[:MAX_TEXT]


class RefusalLog:
    """Logs each distinct reason once through ``logger`` (rclpy or logging), counts all."""

    def __init__(self, logger: Any, max_reasons: int = MAX_REASONS) -> None:
        self.logger, self.max_reasons = logger, max_reasons
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()  # the executor and the worker both refuse things

    def refuse(self, what: str, why: str) -> bool:
        """Count a refusal; log it when its reason is new. Returns True when it was logged."""
        key = reason_key(what, why)
        with self._lock:
            self.counts[key] += 1
            first = self.counts[key] == 1 and len(self.counts) <= self.max_reasons
        if first:
            self.logger.warning(
                f'{what}: {why[:MAX_TEXT]} (logged once; later ones are counted on /diagnostics)'
            )
        return first
