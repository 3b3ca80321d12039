"""Visual odometry: keyframe homographies, persistent feature tracks, photometric alignment,
odometry and the per-frame pipeline."""
