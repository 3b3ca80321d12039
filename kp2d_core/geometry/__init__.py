"""Geometry of images and views: pixel coordinates and warps, the camera and its lens,
homographies, epipolar geometry, camera motion and structure (NumPy, OpenCV)."""
