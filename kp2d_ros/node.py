"""Entry points of the ROS 2 node: camera images in; keypoints, homographies, odometry and a
debug image out.

``kp2d_node`` starts working at once; ``kp2d_lifecycle_node`` is a managed node that loads
the model on *configure* and subscribes on *activate* (the classes are in
:mod:`kp2d_ros.nodes`). Heavy imports (rclpy, NumPy, the inference runtime) happen inside
``main``, after a quiet SIGINT handler is installed, so Ctrl-C at any moment ends the process
without a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

# NumPy's BLAS starts a thread per core that keeps spinning after each product (descriptor
# matching), taking the cores from the network's threads: resized to 240x320 the node gave
# 54 % of extract()'s frame rate with it and 76 % with one thread (docs/memory.md).
# Read when NumPy is first imported; a value set by the user wins.
BLAS_THREADS = {'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def _quiet_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def run(args: list[str] | None, lifecycle: bool) -> None:
    from kp2d_ros.dependencies import NODE_LIBRARIES, MissingLibraryError, require_libraries

    try:
        require_libraries('kp2d_node', NODE_LIBRARIES)
    except MissingLibraryError as exc:
        raise SystemExit(str(exc)) from None
    signal.signal(signal.SIGINT, _quiet_exit)
    signal.signal(signal.SIGTERM, _quiet_exit)
    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)
    from kp2d_ros.process_memory import configure_allocator

    configure_allocator()  # before any thread exists (docs/memory.md)
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    from kp2d_ros.nodes import START_UP_ERRORS, Kp2dLifecycleNode, Kp2dNode

    node = None
    try:
        node = Kp2dLifecycleNode() if lifecycle else Kp2dNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    except RuntimeError:  # rclpy's RCLError when a signal shut the context down mid-wait
        if rclpy.ok():
            raise
    except START_UP_ERRORS as exc:  # missing or corrupt weights, invalid parameters
        rclpy.logging.get_logger('kp2d').fatal(f'cannot start: {exc}')
        _shutdown(rclpy, node)
        raise SystemExit(1) from None
    _shutdown(rclpy, node)


def _shutdown(rclpy: Any, node: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt this
    if node is not None:
        node.close()
        node.destroy_node()
    rclpy.try_shutdown()


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run kp2d_ros kp2d_node``."""
    run(args if args is not None else sys.argv, lifecycle=False)


def lifecycle_main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run kp2d_ros kp2d_lifecycle_node``."""
    run(args if args is not None else sys.argv, lifecycle=True)


if __name__ == '__main__':
    main()
