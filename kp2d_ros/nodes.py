"""The kp2d node classes: :class:`Kp2dNode` (works from construction) and
:class:`Kp2dLifecycleNode` (a managed node: the model loads on *configure*, subscriptions
open on *activate*). Both run one :class:`~kp2d_ros.runtime.Kp2dRuntime`; the entry points
that start them are in :mod:`kp2d_ros.node`.
"""

from __future__ import annotations

from typing import Any

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.node import Node

from kp2d_ros.runtime import Kp2dRuntime

START_UP_ERRORS = (ValueError, OSError)  # CheckpointError is a ValueError
NODE_NAME = 'kp2d'


class Kp2dNode(Node):
    """The plain node: configured and subscribed on construction (raises START_UP_ERRORS
    for missing or corrupt weights and invalid parameters)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = Kp2dRuntime(self)
        self.runtime.configure()
        self.runtime.activate()

    def close(self) -> None:
        self.runtime.cleanup()


class Kp2dLifecycleNode(LifecycleNode):
    """configure: load the model and create publishers; activate: subscribe; deactivate,
    cleanup and shutdown undo them. A configure that fails logs its reason and reports
    FAILURE, leaving the node unconfigured."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = Kp2dRuntime(self, lifecycle=True)

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.runtime.configure()
        except START_UP_ERRORS as exc:
            self.get_logger().error(f'cannot configure: {exc}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.runtime.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.runtime.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.runtime.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.runtime.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self.runtime.cleanup()
