"""The int8 graph's first, full-resolution stage, rewritten to need less memory.

Each rewrite keeps the integer arithmetic, so the outputs stay bit-identical
(`test/core/test_int8_graph.py`); docs/memory.md, has the measurements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kp2d_core.inference.onnx_graph import (
    add_array,
    add_int64,
    attributes,
    consumers,
    drop_unused,
    initializers,
    producers,
    rename_input,
    replace,
)

ELEMENTWISE = ('QuantizeLinear', 'DequantizeLinear', 'LeakyRelu', 'Relu')
SYMMETRIC_INPUT_CHANNELS = 4  # ONNX Runtime's int8 kernel without an int32 frame buffer


def shapes_from_input(proto: Any) -> bool:
    """Shape nodes that read the dequantised graph input read the input itself: ONNX
    Runtime otherwise keeps a float copy of the whole image for a shape (two at 640x480:
    7 MiB). False where no Shape reads it."""
    graph = proto.graph
    makers, changed = producers(graph), False
    for node in graph.node:
        dq = makers.get(node.input[0]) if node.op_type == 'Shape' else None
        if dq is None or dq.op_type != 'DequantizeLinear':
            continue
        quantize = makers.get(dq.input[0])
        if quantize is not None and quantize.input[0] == graph.input[0].name:
            node.input[0] = quantize.input[0]
            changed = True
    if changed:
        drop_unused(graph)
    return changed


def band_input_stage(proto: Any, bands: int) -> bool:
    """Compute the network's first stage (the convolutions and activations on the quantised
    input up to the first pooling's quantised output) on ``bands`` horizontal bands of the
    image, each with the rows its kernels need from its neighbours; the full-resolution
    activations then never exist for the whole image at once. Exact for inputs whose
    height is a multiple of 8 (what the network takes). False where the graph has no such
    stage (3x3 stride-1 convolutions with one pixel of padding, elementwise activations and
    quantisations, a 2x2 stride-2 pooling)."""
    from onnx import helper

    if bands < 2:
        raise ValueError(f'bands must be at least 2, got {bands}')
    graph = proto.graph
    found = _input_stage(graph)
    if found is None:
        return False
    src, chain = found
    halo, factor = _halo(chain)
    prefix = f'{next(n for n in chain if n.op_type == "Conv").name}_band'
    limits, nodes = _band_limits(graph, src, bands, prefix, halo, factor)
    outputs = []
    for k, (start, end) in enumerate(limits):
        tag = f'{prefix}{k}'
        nodes.append(helper.make_node('Slice', [src, start, end, f'{prefix}_axis'], [tag]))
        last = tag
        for index, node in enumerate(chain):
            attrs = attributes(node)
            if node.op_type == 'Conv':
                attrs['pads'] = [int(k == 0), 1, int(k == bands - 1), 1]  # t, l, b, r
            name = f'{tag}_{index}'
            nodes.append(
                helper.make_node(node.op_type, [last, *node.input[1:]], [name], name, **attrs)
            )
            last = name
        outputs.append(last)
    nodes.append(helper.make_node('Concat', outputs, [chain[-1].output[0]], axis=2))
    replace(graph, chain[-1], chain, nodes)
    return True


def pad_input_channels(proto: Any) -> bool:
    """Give the convolutions on a 3-channel quantised input a fourth channel (the input's
    zero point, zero weights): ONNX Runtime then runs them on its symmetric int8 kernel,
    which needs no int32 buffer for all output channels of its input (9.5 MiB per quarter
    of a 640x480 frame). Outputs identical. False where the input is not 3 channels or
    feeds anything but (sliced) convolutions."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    quantize = _input_quantisation(graph)
    if quantize is None or len(quantize.input) < 3:  # no zero point to pad with
        return False
    weights = _input_weights(graph, quantize)
    if not weights:
        return False
    inits = initializers(graph)
    for dq in weights:
        w = numpy_helper.to_array(inits[dq.input[0]])
        wide = np.zeros((w.shape[0], SYMMETRIC_INPUT_CHANNELS, *w.shape[2:]), w.dtype)
        wide[:, : w.shape[1]] = w
        dq.input[0] = add_array(graph, f'{dq.input[0]}_{SYMMETRIC_INPUT_CHANNELS}ch', wide)
    src = quantize.output[0]
    pads = add_array(graph, f'{src}_channel_pads', np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64))
    wide_src = f'{src}_{SYMMETRIC_INPUT_CHANNELS}ch'
    pad = helper.make_node('Pad', [src, pads, quantize.input[2]], [wide_src], mode='constant')
    rename_input(graph, src, wide_src)
    replace(graph, quantize, [quantize], [quantize, pad])
    drop_unused(graph)
    return True


def _input_quantisation(graph):
    for node in graph.node:
        if node.op_type == 'QuantizeLinear' and node.input[0] == graph.input[0].name:
            return node
    return None


def _input_weights(graph, quantize) -> list | None:
    """The weight DequantizeLinear nodes of the 3-channel convolutions that the quantised
    input feeds through Slice and DequantizeLinear nodes only; None if it feeds more."""
    uses, makers, inits = consumers(graph), producers(graph), initializers(graph)
    weights, frontier = [], [quantize.output[0]]
    while frontier:
        name = frontier.pop()
        for node in uses.get(name, []):
            reads = node.input[0] == name
            if node.op_type == 'Shape':
                continue  # the band limits: the same height after padding
            if node.op_type in ('Slice', 'DequantizeLinear') and reads:
                frontier.append(node.output[0])
                continue
            dq = makers.get(node.input[1]) if node.op_type == 'Conv' and reads else None
            init = inits.get(dq.input[0]) if dq is not None else None
            if init is None or list(init.dims)[1:2] != [3]:
                return None
            if all(dq is not known for known in weights):
                weights.append(dq)
    return weights


def _input_stage(graph):
    """(the quantised input's name, the stage's nodes from the DequantizeLinear after it to
    the QuantizeLinear after the first MaxPool), or None."""
    quantize = _input_quantisation(graph)
    if quantize is None:
        return None
    uses = consumers(graph)
    for dq in uses.get(quantize.output[0], []):
        if dq.op_type == 'DequantizeLinear':
            chain = _stage_from(dq, uses)
            if chain is not None:
                return quantize.output[0], chain
    return None


def _stage_from(dq, uses) -> list | None:
    chain, node, pooled = [dq], dq, False
    while True:
        after = uses.get(node.output[0], [])
        if len(after) != 1 or after[0].input[0] != node.output[0]:
            return None
        node = after[0]
        if node.op_type == 'Conv' and not _plain_3x3(node):
            return None
        if node.op_type == 'MaxPool':
            if pooled or not _plain_pool(node):
                return None
            pooled = True
        elif node.op_type not in ('Conv', *ELEMENTWISE):
            return None
        chain.append(node)
        if pooled and node.op_type == 'QuantizeLinear':
            return chain if any(n.op_type == 'Conv' for n in chain) else None


def _halo(chain: list) -> tuple[int, int]:
    """(input rows a band needs beyond its share on each side, the stage's downsampling)."""
    halo, factor = 0, 1
    for node in reversed(chain):
        if node.op_type == 'Conv':
            halo += 1
        elif node.op_type == 'MaxPool':
            halo, factor = 2 * halo, 2 * factor
    return halo, factor


def _plain_3x3(conv) -> bool:
    attrs = attributes(conv)
    return (
        list(attrs.get('kernel_shape', [])) == [3, 3]
        and list(attrs.get('pads', [0] * 4)) == [1, 1, 1, 1]
        and list(attrs.get('strides', [1, 1])) == [1, 1]
        and list(attrs.get('dilations', [1, 1])) == [1, 1]
        and attrs.get('group', 1) == 1
        and attrs.get('auto_pad', b'NOTSET') in (b'NOTSET', 'NOTSET')
    )


def _plain_pool(pool) -> bool:
    attrs = attributes(pool)
    return (
        list(attrs.get('kernel_shape', [])) == [2, 2]
        and list(attrs.get('strides', [1, 1])) == [2, 2]
        and list(attrs.get('pads', [0] * 4)) == [0] * 4
        and list(attrs.get('dilations', [1, 1])) == [1, 1]
        and not attrs.get('ceil_mode', 0)
        and attrs.get('auto_pad', b'NOTSET') in (b'NOTSET', 'NOTSET')
        and len(pool.output) == 1
    )


def _band_limits(graph, src: str, bands: int, prefix: str, halo: int, factor: int):
    """([(start, end)] names of each band's input rows, the nodes computing them from the
    input's height at run time): band k gives the stage's output rows
    [k h / n, (k + 1) h / n) of its h = H / factor, and reads ``halo`` more rows on each
    side that is not the image's edge."""
    from onnx import helper

    def const(name: str, value: int) -> str:
        return add_int64(graph, f'{prefix}_{name}', value)

    count, scale, margin = const('count', bands), const('factor', factor), const('halo', halo)
    const('axis', 2)
    rows = f'{prefix}_rows'
    nodes = [
        helper.make_node('Shape', [src], [f'{prefix}_height'], start=2, end=3),
        helper.make_node('Div', [f'{prefix}_height', scale], [rows]),
    ]
    cuts = []
    for k in range(1, bands):
        cut = f'{prefix}_cut{k}'
        nodes += [
            helper.make_node('Mul', [rows, const(f'k{k}', k)], [f'{cut}_k']),
            helper.make_node('Div', [f'{cut}_k', count], [f'{cut}_out']),
            helper.make_node('Mul', [f'{cut}_out', scale], [cut]),
            helper.make_node('Sub', [cut, margin], [f'{cut}_above']),
            helper.make_node('Add', [cut, margin], [f'{cut}_below']),
        ]
        cuts.append(cut)
    starts = [const('zero', 0)] + [f'{cut}_above' for cut in cuts]
    ends = [f'{cut}_below' for cut in cuts] + [const('end', np.iinfo(np.int64).max)]
    return list(zip(starts, ends)), nodes
