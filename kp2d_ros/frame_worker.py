"""A worker thread with a newest-item slot: inference runs off the ROS executor's thread.

The executor only drops each incoming frame into the slot (replacing, and reporting, a frame
that was still waiting), so CameraInfo, parameter services and /diagnostics stay responsive
while a frame is processed, and processing always starts on the newest frame.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import threading
from typing import Generic, TypeVar

T = TypeVar('T')
LOG = logging.getLogger(__name__)


class LatestSlotWorker(Generic[T]):
    """Runs ``handler`` on the newest submitted item in one background thread."""

    def __init__(self, handler: Callable[[T], None], name: str = 'kp2d-worker') -> None:
        self._handler = handler
        self._condition = threading.Condition()
        self._item: T | None = None
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Put ``item`` in the slot; True if it replaced an item that was never processed."""
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
        return replaced

    def idle(self) -> bool:
        """No item waiting and none being processed."""
        with self._condition:
            return self._item is None and not self._busy

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the item in progress (the waiting one is discarded) and end the thread."""
        with self._condition:
            self._stopped = True
            self._item = None
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._item is None and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                item, self._item, self._busy = self._item, None, True
            try:
                self._handler(item)
            except Exception:  # noqa: BLE001 - the handler reports; the thread must live on
                LOG.exception('frame handler failed')
            finally:
                # Not kept while waiting for the next one: a large frame's bytes would stay
                # in memory until another frame came.
                item = None
                with self._condition:
                    self._busy = False
