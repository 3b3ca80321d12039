"""kp2d_ros: the ROS 2 wrapper around :mod:`kp2d_core` (importing this package needs no ROS)."""
