"""Image in, keypoints out: the front-end, its backends (PyTorch, ONNX Runtime), matching, ONNX
export and int8 rewriting."""
