"""The light network's descriptor lift, left to the front-end.

The light model's descriptors at H/4 are ``upsample2x(coarse) + fine`` (bilinear, half-pixel
centres; :class:`~kp2d_core.model.light_blocks.LightDescriptorHead`): ``coarse`` at H/8 and
``fine``, a projection of H/4 features. The front-end reads descriptors only at its keypoints
(at most ``top_k`` of the 19,200 cells at 640x480), and both the upsampling and the sum are
linear, so sampling the two parts and adding them gives the same descriptors as sampling the
sum (:func:`~kp2d_core.geometry.coordinates.sample_upsampled_map`). :func:`split_descriptor_lift`
rewrites an ONNX graph to output the parts instead of the dense sum, which ONNX Runtime
computed in float (a 2x resize and an add of 256 x 120 x 160 values at 640x480: a fifth of
the light int8 network's time; models/light_model.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kp2d_core.inference.onnx_graph import (
    consumers,
    drop_unused,
    initializers,
    producers,
    rename_tensor,
)

DESCRIPTOR_OUTPUT = 'descriptors'
FINE_OUTPUT = 'descriptors_fine'


def split_descriptor_lift(proto: Any) -> bool:
    """Make the graph output ``descriptors`` = the coarse map and ``descriptors_fine`` = the
    fine one where ``descriptors`` is ``Resize(coarse, x2 bilinear half-pixel) + fine``
    (either order); False (graph unchanged) where it is not."""
    from onnx import helper

    graph = proto.graph
    found = _lift(graph)
    if found is None:
        return False
    add, resize, fine = found
    coarse = resize.input[0]
    output = next(o for o in graph.output if o.name == DESCRIPTOR_OUTPUT)
    rename_tensor(graph, coarse, DESCRIPTOR_OUTPUT, skip=add)
    rename_tensor(graph, fine, FINE_OUTPUT, skip=add)
    graph.node.remove(add)
    tensor_type = output.type.tensor_type
    channels = tensor_type.shape.dim[1] if len(tensor_type.shape.dim) == 4 else None
    depth = channels.dim_value or channels.dim_param if channels is not None else 'depth'
    graph.output.remove(output)
    for name, grid in ((DESCRIPTOR_OUTPUT, 'coarse'), (FINE_OUTPUT, 'fine')):
        shape = ['batch', depth, f'{grid}_height', f'{grid}_width']
        graph.output.append(helper.make_tensor_value_info(name, tensor_type.elem_type, shape))
    drop_unused(graph)
    return True


def _lift(graph) -> tuple | None:
    """(Add, Resize, fine tensor name) of the pattern, or None."""
    makers = producers(graph)
    add = makers.get(DESCRIPTOR_OUTPUT)
    outputs = [o.name for o in graph.output]
    if add is None or add.op_type != 'Add' or FINE_OUTPUT in outputs:
        return None
    for index, name in enumerate(add.input):
        resize = makers.get(name)
        if resize is not None and _is_bilinear_2x(graph, resize):
            fine = add.input[1 - index]
            computed = resize.input[0] in makers and fine in makers  # not graph inputs
            if computed and len(consumers(graph).get(name, [])) == 1 and fine not in outputs:
                return add, resize, fine
    return None


def _is_bilinear_2x(graph, node) -> bool:
    """A Resize by 2 in H and W, bilinear with half-pixel centres (PyTorch's
    ``interpolate(scale_factor=2, mode='bilinear', align_corners=False)``)."""
    from onnx import helper

    if node.op_type != 'Resize' or len(node.input) < 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get('mode') != b'linear' or attrs.get('coordinate_transformation_mode') not in (
        b'half_pixel',
        b'pytorch_half_pixel',
    ):
        return False
    if len(node.input) > 3 and node.input[3]:
        return False  # sizes, not scales
    scales = _constant(graph, node.input[2])
    return scales is not None and np.array_equal(scales, [1.0, 1.0, 2.0, 2.0])


def _constant(graph, name: str) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    inits = initializers(graph)
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producers(graph).get(name)
    if node is not None and node.op_type == 'Constant':
        value = {a.name: a for a in node.attribute}.get('value')
        return numpy_helper.to_array(helper.get_attribute_value(value)) if value else None
    return None
