"""Training data: random homography adaptation, photometric augmentation, image folders."""
