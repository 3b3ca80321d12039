"""Rewrites of the int8 (QDQ) graph that lower ONNX Runtime's activation memory.

ONNX Runtime keeps the largest moments of a run in its CPU arena (and, as a frame's
allocations rarely fit the blocks a previous one freed, about twice them), so the largest
single allocations of one frame set what a node holds. At 640x480 they were, in turn
(docs/memory.md):

* the first convolution (3 input channels), which unrolls the image and accumulates all of
  its output channels in int32 (8 + 38 MiB); then the second one's indirection buffer
  (nine pointers per pixel, 21 MiB): the whole first stage, up to the first pooling, now
  runs on horizontal bands of the image, each with the rows its kernels need from its
  neighbours (:func:`~kp2d_core.inference.int8_stage.band_input_stage`), on an input padded to
  4 channels so that the first convolution runs on the symmetric kernel too
  (:func:`~kp2d_core.inference.int8_stage.pad_input_channels`);
* the descriptor head's float upsampling and concatenation (38 MiB): kept in uint8
  (:func:`~kp2d_core.inference.int8_heads.int8_upsampling`; descriptors change by less than 0.2 %
  in cosine);
* the float descriptor output (18.75 MiB): output as quantised, uint8
  (:func:`~kp2d_core.inference.int8_heads.int8_descriptors`);
* the score head's 256 -> 1 convolution, unrolled whole (10.5 MiB): padded to 16 filters
  (:func:`~kp2d_core.inference.int8_heads.pad_output_channels`);
* the light model's float descriptor lift (a 2x resize and a sum at H/4): the graph outputs
  its two quantised parts, which the front-end samples
  (:func:`~kp2d_core.inference.descriptor_lift.split_descriptor_lift`);
* float copies of the image kept for a Shape, and of the third stage's activation kept
  until the descriptor head (:func:`~kp2d_core.inference.int8_stage.shapes_from_input`,
  :func:`~kp2d_core.inference.int8_heads.quantise_before_fanout`).

All but the upsampling keep the integer arithmetic: outputs bit-identical. They act on the
graph that :func:`kp2d_core.inference.export.quantize_int8` writes and leave any other graph alone.
"""

from __future__ import annotations

import logging
from typing import Any

from kp2d_core.inference.descriptor_lift import split_descriptor_lift
from kp2d_core.inference.int8_heads import (
    int8_descriptors,
    int8_upsampling,
    pad_output_channels,
    quantise_before_fanout,
)
from kp2d_core.inference.int8_stage import band_input_stage, pad_input_channels, shapes_from_input

LOG = logging.getLogger(__name__)

INPUT_BANDS = 4  # bands of the first stage (exact for every height the network takes)


def lean_int8_graph(proto: Any, bands: int = INPUT_BANDS) -> list[str]:
    """Apply every rewrite to an int8 QDQ ``onnx.ModelProto`` in place; returns what was
    rewritten (a rewrite whose pattern the graph lacks is skipped)."""
    steps = (
        ('shapes read the input', shapes_from_input),
        (f'first stage in {bands} bands', lambda proto: band_input_stage(proto, bands)),
        ('input padded to 4 channels', pad_input_channels),
        ('descriptor upsampling in uint8', int8_upsampling),
        ('shared activations quantised', quantise_before_fanout),
        ('narrow convolutions padded', pad_output_channels),
        ('descriptor lift split', split_descriptor_lift),
        ('uint8 descriptors', int8_descriptors),
    )
    done = [name for name, rewrite in steps if rewrite(proto)]
    LOG.info('int8 graph: %s', ', '.join(done) or 'unchanged')
    return done
