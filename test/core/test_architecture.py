"""The import graph of kp2d_core: no circles, and every import runs downhill.

The sub-packages are layered, lowest first (docs/architecture.md draws it); a module may import
from its own layer and the ones below, never above. Imports under ``TYPE_CHECKING`` count: a
type that needs a module above its user is a sign that it lives in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / 'kp2d_core'
LAYERS = (
    'foundation',  # kp2d_core.config, .checks, .images, .viz: modules at the top level
    'geometry',
    'model',
    'inference',
    'vo',
    'data',
    'training',
    'evaluation',
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> set[str]:
    """kp2d_core modules a file imports, anywhere in it (functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('kp2d_core'):
            found |= {f'{node.module}.{alias.name}' for alias in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith('kp2d_core')}
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports ('pkg.module.name' resolved to the module; a module's
    own package, which Python imports first, is not an edge)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        resolved = set()
        for target in _imports(path):
            while target not in modules and '.' in target:
                target = target.rsplit('.', 1)[0]
            if target in modules and target != name and not name.startswith(target + '.'):
                resolved.add(target)
        graph[name] = resolved
    return graph


def layer(module: str) -> int:
    """The layer of a module of kp2d_core (the package itself, the public API, is above all)."""
    parts = module.split('.')
    if len(parts) == 1:
        return len(LAYERS)
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    assert len(parts) == 2 and (PACKAGE / f'{parts[1]}.py').is_file(), f'{module}: no layer'
    return 0


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        layer(module)


def test_no_import_cycles() -> None:
    graph, state = _graph(), {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                raise AssertionError(' -> '.join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_imports_run_downhill() -> None:
    climbs = [
        f'{module} ({LAYERS[layer(module)]}) imports {target}'
        for module, targets in _graph().items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not climbs, '\n'.join(climbs)


def test_the_checker_sees_a_climb_and_a_circle(tmp_path) -> None:
    """The rules above can fail: a type-only import from a higher layer is caught."""
    fake = tmp_path / 'kp2d_core'
    (fake / 'geometry').mkdir(parents=True)
    (fake / 'vo').mkdir()
    (fake / '__init__.py').write_text('')
    (fake / 'geometry' / '__init__.py').write_text('')
    (fake / 'vo' / '__init__.py').write_text('')
    (fake / 'geometry' / 'a.py').write_text(
        'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kp2d_core.vo.b import B\n'
    )
    (fake / 'vo' / 'b.py').write_text('from kp2d_core.geometry.a import A\n')
    globals()['PACKAGE'] = fake
    try:
        graph = _graph()
        assert graph['kp2d_core.geometry.a'] == {'kp2d_core.vo.b'}
        assert layer('kp2d_core.vo.b') > layer('kp2d_core.geometry.a')
        try:
            test_no_import_cycles()
        except AssertionError as exc:
            assert 'kp2d_core.vo.b' in str(exc)
        else:
            raise AssertionError('the circle was not found')
    finally:
        globals()['PACKAGE'] = Path(__file__).resolve().parents[2] / 'kp2d_core'
