"""Entry points of the ROS 2 node: camera images in; keypoints, homographies, odometry and a
debug image out.

``kp2d_node`` starts working at once; ``kp2d_lifecycle_node`` is a managed node that loads
the model on *configure* and subscribes on *activate* (the classes are in
:mod:`kp2d_ros.nodes`); ``kp2d_replay`` runs the node's pipeline over a recording
(:mod:`kp2d_ros.replay`). Heavy imports (rclpy, NumPy, the inference runtime) happen inside
``main``, after a quiet SIGINT handler is installed, so Ctrl-C at any moment ends the process
without a traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from kp2d_core.blas_threads import one_blas_thread


def _quiet_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def params_files(args: list[str]) -> list[str]:
    """The files named by ``--params-file`` in a ROS command line."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == '--params-file']


def check_start(args: list[str] | None, tool: str) -> None:
    """Refuse, in one line, what would otherwise end in a traceback before the node exists:
    missing ROS libraries, and parameters files that are not YAML or cannot be read (rclpy
    would end with its own 13-line traceback)."""
    from kp2d_ros.dependencies import NODE_LIBRARIES, MissingLibraryError, require_libraries
    from kp2d_ros.params_file import params_file_values

    try:
        require_libraries(tool, NODE_LIBRARIES)
    except MissingLibraryError as exc:
        raise SystemExit(str(exc)) from None
    for path in params_files(list(args or [])):
        try:
            params_file_values(path)
        except (ValueError, OSError) as exc:
            raise SystemExit(f'{tool}: cannot start: {exc}') from None


def run(args: list[str] | None, lifecycle: bool) -> None:
    check_start(args, 'kp2d_lifecycle_node' if lifecycle else 'kp2d_node')
    signal.signal(signal.SIGINT, _quiet_exit)
    signal.signal(signal.SIGTERM, _quiet_exit)
    one_blas_thread()  # before NumPy loads (kp2d_core.blas_threads)
    from kp2d_ros.process_memory import configure_allocator

    configure_allocator()  # before any thread exists (docs/memory.md)
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        rclpy.init(args=args)
    except RuntimeError as exc:  # rclpy's RCLError: arguments rcl cannot parse
        raise SystemExit(f'cannot start: {str(exc).splitlines()[0][:300]}') from None
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


def replay_main(argv: list[str] | None = None) -> None:
    """Entry point of ``kp2d_replay`` (:mod:`kp2d_ros.replay`): the node's pipeline over a
    recording, with BLAS on one thread as in the node."""
    one_blas_thread()  # before NumPy loads (kp2d_core.blas_threads)
    from kp2d_ros.replay import main as replay

    replay(argv)


if __name__ == '__main__':
    main()
