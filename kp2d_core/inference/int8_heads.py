"""The int8 graph's later layers and heads, rewritten to need less memory.

Every rewrite but :func:`int8_upsampling` keeps the integer arithmetic and the outputs
bit-identical; docs/memory.md, has the measurements.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kp2d_core.inference.onnx_graph import (
    add_array,
    add_int64,
    attributes,
    consumers,
    drop_unused,
    forget_types,
    initializers,
    producers,
    rename_input,
    rename_tensor,
    replace,
)
from kp2d_core.model.files import QUANTISATION_KEYS

SYMMETRIC_OUTPUT_CHANNELS = 16  # fewer: ONNX Runtime unrolls the whole input (im2col)


def int8_upsampling(proto: Any) -> bool:
    """Run the DepthToSpace between a QuantizeLinear/DequantizeLinear pair and the Concat it
    feeds (whose output is quantised) on uint8 at the Concat's scale; the Concat's other
    inputs are quantised to that scale before it, as its output was after it (descriptors
    change by less than 0.2 % in cosine). False where the graph has no such pattern."""
    from onnx import helper

    graph = proto.graph
    found = _float_upsampling(graph, consumers(graph), producers(graph))
    if found is None:
        return False
    q_up, dq_up, shuffle, concat, q_cat = found
    q_up.input[1], q_up.input[2] = q_cat.input[1], q_cat.input[2]
    shuffle.input[0] = q_up.output[0]
    added = []
    for index, name in enumerate(concat.input):
        if name != shuffle.output[0]:
            quantised = f'{name}_concat_q'
            added.append(helper.make_node('QuantizeLinear', [name, *q_cat.input[1:]], [quantised]))
            concat.input[index] = quantised
    concat.output[0] = q_cat.output[0]
    forget_types(graph, {shuffle.output[0]})  # now uint8, not the float recorded
    replace(graph, concat, [q_cat, concat], added + [concat])
    drop_unused(graph)
    return True


def quantise_before_fanout(proto: Any) -> bool:
    """A float activation (between a DequantizeLinear and several readers that each quantise
    it: a QuantizeLinear, or a MaxPool and then one) becomes one copy per reader, quantised
    at once, so ONNX Runtime runs each on uint8 instead of keeping the float map (9.4 MiB
    at 640x480 for the encoder's third stage, alive until the descriptor head). Before a
    MaxPool the copy is quantised at the pooling's output scale: quantisation is monotonic,
    so the maximum of quantised values is the quantised maximum. False where none is."""
    from onnx import helper

    graph = proto.graph
    changed = False
    while (found := _fanout(graph)) is not None:  # one at a time: see pad_output_channels
        act, readers, plan = found
        added = []
        for index, (reader, scale) in enumerate(zip(readers, plan)):
            copy = f'{act.output[0]}_copy{index}'
            added.append(helper.make_node(act.op_type, list(act.input), [copy], **attributes(act)))
            if scale:  # a MaxPool: quantise here, at its output's scale
                added += [
                    helper.make_node('QuantizeLinear', [copy, *scale], [f'{copy}_q']),
                    helper.make_node('DequantizeLinear', [f'{copy}_q', *scale], [f'{copy}_dq']),
                ]
                copy = f'{copy}_dq'
            reader.input[0] = copy
        replace(graph, act, [act], added)
        changed = True
    return changed


def pad_output_channels(proto: Any) -> bool:
    """Give quantised convolutions with fewer than 16 output channels zero filters up to 16,
    and slice their quantised output back: ONNX Runtime then runs them on its symmetric
    int8 kernel instead of unrolling the whole input (the score head's 256 -> 1 convolution:
    10.5 MiB at 640x480). Outputs identical. A convolution whose unrolled input is no
    wider than 16 values per pixel keeps its filters (the light model's first one, 1 -> 8
    channels 3x3: padded, slicing its 640x480 output took 1.4 ms in ONNX Runtime's profile).
    False where there is none."""
    from onnx import helper

    graph = proto.graph
    changed = False
    while True:  # one at a time: a rewrite replaces the graph's node list (stale references)
        uses = consumers(graph)
        found = next(
            ((c, f) for c in graph.node if (f := _narrow_quantised_conv(graph, c, uses))),
            None,
        )
        if found is None:
            break
        conv, (q_out, channels) = found
        sliced = f'{q_out.output[0]}_sliced'
        rename_input(graph, q_out.output[0], sliced)
        bounds = [
            add_int64(graph, f'{sliced}_{name}', value)
            for name, value in (('start', 0), ('end', channels), ('axis', 1))
        ]
        cut = helper.make_node('Slice', [q_out.output[0], *bounds], [sliced])
        replace(graph, q_out, [q_out], [q_out, cut])
        forget_types(graph, {conv.output[0], q_out.output[0]})  # now wider than recorded
        changed = True
    if changed:
        drop_unused(graph)
    return changed


def int8_descriptors(proto: Any) -> bool:
    """Output each descriptor map (``descriptors``, and ``descriptors_fine`` of a split lift:
    :mod:`kp2d_core.inference.descriptor_lift`) as it is quantised (uint8, a quarter of
    float32's memory: 4.7 instead of 18.75 MiB at 640x480) and record its scale and zero
    point in the model's metadata (:data:`QUANTISATION_KEYS`); the front-end dequantises the
    descriptors it samples. False where no such output is a DequantizeLinear of a per-tensor
    uint8 quantisation."""
    done = [_quantised_output(proto, name, key) for name, key in QUANTISATION_KEYS.items()]
    return any(done)


def _quantised_output(proto: Any, name: str, key: str) -> bool:
    """:func:`int8_descriptors` for one output."""
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    output = next((o for o in graph.output if o.name == name), None)
    dq = producers(graph).get(name)
    if output is None or dq is None or dq.op_type != 'DequantizeLinear' or len(dq.input) < 3:
        return False
    inits = initializers(graph)
    if dq.input[1] not in inits or dq.input[2] not in inits:
        return False
    scale = numpy_helper.to_array(inits[dq.input[1]])
    zero = numpy_helper.to_array(inits[dq.input[2]])
    if scale.size != 1 or zero.dtype != np.uint8 or not float(scale) > 0:
        return False
    graph.node.remove(dq)
    rename_tensor(graph, dq.input[0], name)
    output.type.tensor_type.elem_type = TensorProto.UINT8
    entry = proto.metadata_props.add()
    entry.key = key
    entry.value = json.dumps({'scale': float(scale), 'zero_point': int(zero)})
    drop_unused(graph)
    return True


def _fanout(graph) -> tuple | None:
    """(activation, its readers, what each quantises at) of the first float activation read
    by several quantising readers, or None."""
    uses = consumers(graph)
    for act in graph.node:
        readers = uses.get(act.output[0], []) if act.op_type in ('LeakyRelu', 'Relu') else []
        plan = [_quantised_after(reader, uses) for reader in readers]
        if len(readers) >= 2 and all(step is not None for step in plan):
            return act, readers, plan
    return None


def _quantised_after(reader, uses) -> list | None:
    """[] for a QuantizeLinear reader, [scale, zero point] for a MaxPool whose only reader
    quantises it, else None."""
    if reader.op_type == 'QuantizeLinear':
        return []
    after = uses.get(reader.output[0], []) if reader.op_type == 'MaxPool' else []
    if len(after) == 1 and after[0].op_type == 'QuantizeLinear':
        return list(after[0].input[1:])
    return None


def _narrow_quantised_conv(graph, conv, uses):
    """(its QuantizeLinear, output channels) of a Conv with dequantised per-channel int8
    weights and bias, fewer than 16 filters, more than 16 input values per output pixel
    (channels x kernel) and one quantised reader; its weight and bias
    initializers are padded to 16 filters in the process. None otherwise."""
    from onnx import numpy_helper

    if conv.op_type != 'Conv' or len(conv.input) < 3:
        return None
    makers, inits = producers(graph), initializers(graph)
    dqs = [makers.get(name) for name in conv.input[1:3]]
    after = uses.get(conv.output[0], [])
    if any(dq is None or dq.op_type != 'DequantizeLinear' for dq in dqs):
        return None
    if len(after) != 1 or after[0].op_type != 'QuantizeLinear':
        return None
    if any(name not in inits for dq in dqs for name in dq.input):
        return None
    weight_dims = list(inits[dqs[0].input[0]].dims)
    channels, unrolled = int(weight_dims[0]), int(np.prod(weight_dims[1:]))
    if channels >= SYMMETRIC_OUTPUT_CHANNELS or unrolled <= SYMMETRIC_OUTPUT_CHANNELS:
        return None
    for dq in dqs:
        for index, name in enumerate(dq.input):
            value = numpy_helper.to_array(inits[name])
            if value.ndim and value.shape[0] == channels:  # per filter: pad
                wide = np.zeros((SYMMETRIC_OUTPUT_CHANNELS, *value.shape[1:]), value.dtype)
                wide[:channels] = value
                if index == 1:  # a scale: never zero
                    wide[channels:] = value[0]
                dq.input[index] = add_array(graph, f'{name}_wide', wide)
    return after[0], channels


def _float_upsampling(graph, uses, makers):
    """(Q, DQ, DepthToSpace, Concat, Q after it) of a float DepthToSpace between
    quantisations, or None."""
    for shuffle in graph.node:
        if shuffle.op_type != 'DepthToSpace':
            continue
        dq = makers.get(shuffle.input[0])
        q = makers.get(dq.input[0]) if dq is not None else None
        after = uses.get(shuffle.output[0], [])
        if dq is None or dq.op_type != 'DequantizeLinear' or q is None:
            continue
        if q.op_type != 'QuantizeLinear' or len(after) != 1 or after[0].op_type != 'Concat':
            continue
        concat = after[0]
        quantised = uses.get(concat.output[0], [])
        outputs = {o.name for o in graph.output}
        if concat.output[0] in outputs or len(quantised) != 1:
            continue
        if quantised[0].op_type == 'QuantizeLinear':
            return q, dq, shuffle, concat, quantised[0]
    return None
