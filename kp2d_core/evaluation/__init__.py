"""HPatches-protocol evaluation: loader, metrics, extractors and the harness (ROS-free)."""
