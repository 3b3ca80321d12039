"""The networks (KeypointNet, its light variant, IONet), their checkpoints and files, and the
training losses."""
