"""Image stamps as the node and the replay tool treat them (free of rclpy): integer
nanoseconds, and the policy that drops, accepts or resets on each frame's stamp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NANOSECONDS = 1_000_000_000
PLAUSIBLE_EPOCH_NS = 946_684_800 * NANOSECONDS  # 2000-01-01T00:00:00Z
BEFORE_EPOCH = (
    "before 2000 while the node's clock is not: a stamp from another clock (play a "
    "simulator's bags with --clock and use_sim_time:=true)"
)


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time to integer nanoseconds."""
    return int(stamp.sec) * NANOSECONDS + int(stamp.nanosec)


def time_msg(cls: Any, nanoseconds: int) -> Any:
    """builtin_interfaces/Time of integer nanoseconds (exact)."""
    sec, nanosec = divmod(int(nanoseconds), NANOSECONDS)
    return cls(sec=sec, nanosec=nanosec)


@dataclass(frozen=True)
class Verdict:
    """What to do with a frame's stamp: 'ok', 'reset' (time went back: reset, then process)
    or 'drop' (with the reason, counted under it, and for the log what exactly was wrong)."""

    action: str
    reason: str = ''
    detail: str = ''


class StampPolicy:
    """Decides what a frame's stamp means for tracking (stamps in integer nanoseconds).

    * ``nanosec`` outside [0, 1e9), or a stamp at or before the epoch (0 or negative, what an
      unset header carries): not a time, dropped ('invalid_stamp').
    * Before ``PLAUSIBLE_EPOCH_NS`` (2000-01-01) while the node's clock is past it: a stamp
      from another clock (a simulator's bag played on wall time, a driver without time), so
      dropped ('invalid_stamp', with that detail): it would reset the tracker and make every
      latency decades long. A clock before 2000 (simulated time, a robot without a real-time clock)
      compares nothing.
    * More than ``max_future_s`` ahead of the node's clock: dropped ('stamp_in_future') and
      it does not become the reference, so one bogus stamp cannot block later frames. A clock
      at zero (simulated time before the first /clock) is not compared.
    * The same stamp again: dropped ('duplicate_stamp'); 1 ns later is a new frame.
    * Earlier than the last accepted frame (a looped bag, a simulator reset): 'reset' -- the
      caller resets the tracker and carries on from this frame.
    """

    def __init__(self, max_future_s: float = 10.0) -> None:
        self.max_future_s = max_future_s
        self.last: int | None = None

    def check(self, sec: int, nanosec: int, now_ns: int) -> Verdict:
        if not 0 <= nanosec < NANOSECONDS:
            return Verdict('drop', 'invalid_stamp')
        stamp = int(sec) * NANOSECONDS + int(nanosec)
        if stamp <= 0:
            return Verdict('drop', 'invalid_stamp')
        if now_ns >= PLAUSIBLE_EPOCH_NS and stamp < PLAUSIBLE_EPOCH_NS:
            return Verdict('drop', 'invalid_stamp', BEFORE_EPOCH)
        if now_ns > 0 and stamp > now_ns + int(self.max_future_s * NANOSECONDS):
            return Verdict('drop', 'stamp_in_future')
        last, self.last = self.last, stamp
        if last is None or stamp > last:
            return Verdict('ok')
        if stamp == last:
            return Verdict('drop', 'duplicate_stamp')
        return Verdict('reset', 'time_jumped_back')

    def reset(self) -> None:
        self.last = None
