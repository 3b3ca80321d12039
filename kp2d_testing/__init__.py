"""Test and benchmark helpers (not installed): the node in its own process over real DDS."""
