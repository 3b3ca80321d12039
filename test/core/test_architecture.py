"""The import graph of kp2d_core, as the README's architecture diagram draws it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / 'kp2d_core'
BOTTOM = {
    'kp2d_core.checks',
    'kp2d_core.config',
    'kp2d_core.geometry',
    'kp2d_core.matching',
    'kp2d_core.images',
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> set[str]:
    """kp2d_core modules imported by a file (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and 'TYPE_CHECKING' in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith('kp2d_core')
        ):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith('kp2d_core')}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        resolved = set()
        for target in _imports(path):
            while target not in modules and '.' in target:  # 'pkg.module.attr' -> module
                target = target.rsplit('.', 1)[0]
            if target in modules and target != name and not name.startswith(target + '.'):
                resolved.add(target)
        graph[name] = resolved
    return graph


def test_no_import_cycles():
    graph, state = _graph(), {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 'open'
        for nxt in graph[node]:
            if state.get(nxt) == 'open':
                raise AssertionError(' -> '.join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 'done'

    for node in graph:
        if node not in state:
            visit(node, [])


def test_low_level_modules_import_only_low_level_modules():
    graph = _graph()
    for module in BOTTOM:
        assert graph[module] <= BOTTOM, (module, graph[module] - BOTTOM)
