"""Rewrites of the int8 (QDQ) graph that lower ONNX Runtime's activation memory.

ONNX Runtime keeps the largest moments of a run in its CPU arena, so the peak of one frame
is what a node holds between frames. At 480x640 two moments set it (README, Node memory):

* the first convolution (3 input channels) unrolls the whole image and accumulates all of
  its output channels in int32 (8 + 38 MiB) before requantising. Run on horizontal bands of
  the image (each with the rows its 3x3 kernel needs from its neighbours, zero padding
  only at the image's top and bottom), each band accumulates a quarter of it; the integer
  arithmetic and the requantisation per output element are unchanged, so the outputs are
  bit-identical (:func:`split_input_convolution`).
* the descriptor head's upsampling (DepthToSpace) and concatenation with the encoder's
  features ran in float32 between two quantisations. Kept in uint8 at the scale the
  concatenation is quantised to anyway, they take a quarter of the memory; the upsampling
  convolution requantises once to that scale instead of twice (:func:`int8_upsampling`;
  descriptors change by less than 0.2 % in cosine).

Both act on the graph that :func:`kp2d_core.export.quantize_int8` writes and leave any other
graph alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

LOG = logging.getLogger(__name__)

INPUT_BANDS = 4  # bands of the first convolution: 4 x smaller int32 accumulators


def lean_int8_graph(proto: Any, bands: int = INPUT_BANDS) -> list[str]:
    """Apply both rewrites to an int8 QDQ ``onnx.ModelProto`` in place; returns what was
    rewritten (a rewrite whose pattern the graph lacks is skipped)."""
    done = []
    if split_input_convolution(proto, bands):
        done.append(f'first convolution in {bands} bands')
    if int8_upsampling(proto):
        done.append('descriptor upsampling in uint8')
    LOG.info('int8 graph: %s', ', '.join(done) or 'unchanged')
    return done


def split_input_convolution(proto: Any, bands: int = INPUT_BANDS) -> bool:
    """Compute the convolution on the quantised graph input in ``bands`` horizontal bands
    (outputs bit-identical); False where the graph has no such 3x3, stride-1 convolution
    with one pixel of padding between a DequantizeLinear and a QuantizeLinear."""
    from onnx import helper

    if bands < 2:
        raise ValueError(f'bands must be at least 2, got {bands}')
    graph = proto.graph
    uses = _consumers(graph)
    found = _input_convolution(graph, uses)
    if found is None:
        return False
    dq_in, conv, q_out = found
    src, prefix = dq_in.input[0], f'{conv.name}_band'
    attrs = _attributes(conv)
    limits, nodes = _band_limits(graph, src, bands, prefix)
    outputs = []
    for k, (start, end) in enumerate(limits):
        pads = [int(k == 0), 1, int(k == bands - 1), 1]  # top, left, bottom, right
        tag = f'{prefix}{k}'
        nodes += [
            helper.make_node('Slice', [src, start, end, f'{prefix}_axis'], [f'{tag}_q']),
            helper.make_node('DequantizeLinear', [f'{tag}_q', *dq_in.input[1:]], [f'{tag}_x']),
            helper.make_node(
                'Conv',
                [f'{tag}_x', *conv.input[1:]],
                [f'{tag}_y'],
                name=tag,
                **attrs | {'pads': pads},
            ),
            helper.make_node('QuantizeLinear', [f'{tag}_y', *q_out.input[1:]], [f'{tag}_out']),
        ]
        outputs.append(f'{tag}_out')
    nodes.append(helper.make_node('Concat', outputs, [q_out.output[0]], axis=2))
    drop = [conv, q_out] + ([dq_in] if len(uses[dq_in.output[0]]) == 1 else [])
    _replace(graph, conv, drop, nodes)
    return True


def int8_upsampling(proto: Any) -> bool:
    """Run the DepthToSpace between a QuantizeLinear/DequantizeLinear pair and the Concat it
    feeds (whose output is quantised) on uint8 at the Concat's scale; the Concat's other
    inputs are quantised to that scale before it, as its output was after it. False where
    the graph has no such pattern."""
    from onnx import helper

    graph = proto.graph
    uses, makers = _consumers(graph), producers(graph)
    found = _float_upsampling(graph, uses, makers)
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
    stale = {shuffle.output[0]}  # now uint8: its recorded float type would contradict it
    kept = [info for info in graph.value_info if info.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    drop = [q_cat] + ([dq_up] if len(uses[dq_up.output[0]]) == 1 else [])
    _replace(graph, concat, drop + [concat], added + [concat])
    _drop_unused_initializers(graph)
    return True


def _input_convolution(graph, uses):
    """(DequantizeLinear, Conv, QuantizeLinear) of the convolution on the graph input."""
    for quantize in uses.get(graph.input[0].name, []):
        if quantize.op_type != 'QuantizeLinear':
            continue
        for dq in uses.get(quantize.output[0], []):
            if dq.op_type != 'DequantizeLinear':
                continue
            for conv in uses.get(dq.output[0], []):
                if conv.op_type == 'Conv' and _plain_3x3(conv) and conv.input[0] == dq.output[0]:
                    after = uses.get(conv.output[0], [])
                    if len(after) == 1 and after[0].op_type == 'QuantizeLinear':
                        return dq, conv, after[0]
    return None


def _attributes(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plain_3x3(conv) -> bool:
    attrs = _attributes(conv)
    return (
        list(attrs.get('kernel_shape', [])) == [3, 3]
        and list(attrs.get('pads', [0] * 4)) == [1, 1, 1, 1]
        and list(attrs.get('strides', [1, 1])) == [1, 1]
        and list(attrs.get('dilations', [1, 1])) == [1, 1]
        and attrs.get('auto_pad', b'NOTSET') in (b'NOTSET', 'NOTSET')
    )


def _band_limits(graph, src: str, bands: int, prefix: str) -> tuple[list, list]:
    """([(start, end)] names of each band's input rows, the nodes computing them from the
    input's height at run time): band k gives output rows [k H / n, (k + 1) H / n)."""
    from onnx import helper

    def const(name: str, value: int) -> str:
        _add_int64(graph, f'{prefix}_{name}', value)
        return f'{prefix}_{name}'

    one, count = const('one', 1), const('count', bands)
    const('axis', 2)
    nodes = [helper.make_node('Shape', [src], [f'{prefix}_height'], start=2, end=3)]
    limits = [const('zero', 0)]
    for k in range(1, bands):
        row = f'{prefix}_row{k}'
        nodes += [
            helper.make_node('Mul', [f'{prefix}_height', const(f'k{k}', k)], [f'{row}_kh']),
            helper.make_node('Div', [f'{row}_kh', count], [row]),
            helper.make_node('Sub', [row, one], [f'{row}_above']),
            helper.make_node('Add', [row, one], [f'{row}_below']),
        ]
        limits.append(row)
    last = const('end', np.iinfo(np.int64).max)
    starts = [limits[0]] + [f'{row}_above' for row in limits[1:]]
    ends = [f'{row}_below' for row in limits[1:]] + [last]
    return list(zip(starts, ends)), nodes


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


def _replace(graph, anchor, drop: list, nodes: list) -> None:
    """Remove ``drop`` and insert ``nodes`` where ``anchor`` was (the graph stays in
    topological order: the anchor's inputs are computed before it)."""
    position = list(graph.node).index(anchor)
    before = [n for n in list(graph.node)[:position] if all(n is not d for d in drop)]
    after = [n for n in list(graph.node)[position:] if all(n is not d for d in drop)]
    del graph.node[:]
    graph.node.extend(before + nodes + after)


def _consumers(graph) -> dict[str, list]:
    uses: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def producers(graph) -> dict[str, Any]:
    """Output name -> the node that computes it, of an ONNX graph."""
    return {name: node for node in graph.node for name in node.output}


def _add_int64(graph, name: str, value: int) -> None:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
