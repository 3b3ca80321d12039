"""Small helpers for rewriting ONNX graphs in place (used by the int8 graph's rewrites)."""

from __future__ import annotations

from typing import Any

import numpy as np


def consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes reading it."""
    uses: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def producers(graph) -> dict[str, Any]:
    """Output name -> the node that computes it, of an ONNX graph."""
    return {name: node for node in graph.node for name in node.output}


def initializers(graph) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def attributes(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def replace(graph, anchor, drop: list, nodes: list) -> None:
    """Remove ``drop`` and insert ``nodes`` where ``anchor`` was (the graph stays in
    topological order: the anchor's inputs are computed before it)."""
    position = list(graph.node).index(anchor)
    before = [n for n in list(graph.node)[:position] if all(n is not d for d in drop)]
    after = [n for n in list(graph.node)[position:] if all(n is not d for d in drop)]
    del graph.node[:]
    graph.node.extend(before + nodes + after)


def add_array(graph, name: str, value: np.ndarray) -> str:
    """Add an initializer; returns its name."""
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def add_int64(graph, name: str, value: int) -> str:
    """Add a one-element int64 initializer; returns its name."""
    return add_array(graph, name, np.array([value], np.int64))


def rename_input(graph, old: str, new: str, skip: Any = None) -> None:
    """Every node but ``skip`` that reads ``old`` reads ``new`` instead."""
    for node in graph.node:
        if node is skip:
            continue
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def rename_tensor(graph, old: str, new: str, skip: Any = None) -> None:
    """The tensor ``old`` is called ``new``: its producer's output and every reader's input,
    but ``skip``'s."""
    for node in graph.node:
        if node is not skip:
            node.output[:] = [new if name == old else name for name in node.output]
    rename_input(graph, old, new, skip)


def drop_unused(graph) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly), then unread initializers and
    the recorded types of tensors that no longer exist."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(name in used for name in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    made = {name for node in graph.node for name in node.output}
    forget_types(graph, {info.name for info in graph.value_info} - made)


def forget_types(graph, names: set[str]) -> None:
    """Drop the recorded types (value_info) of these tensors: ones whose type or shape a
    rewrite changed, or that no longer exist."""
    kept = [info for info in graph.value_info if info.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)
