"""ddarts_zoo has no import cycle, counting imports inside function bodies too (the source is read, not run)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import ddarts_zoo

PACKAGE_DIR = Path(ddarts_zoo.__file__).resolve().parent
PACKAGE = 'ddarts_zoo'


def module_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix('').parts]
        if parts[-1] == '__init__':
            parts.pop()
        out['.'.join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ''
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, known: Set[str]) -> Set[str]:
    """Package modules that ``module`` imports anywhere in its source (module level or in functions)."""
    def within(name: Optional[str]) -> Optional[str]:
        while name and name not in known:  # 'ddarts_zoo.genotype.Edge' -> 'ddarts_zoo.genotype'
            name = name.rpartition('.')[0]
        return name or None

    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (within(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == '__init__.py', node)
            if target.split('.')[0] != PACKAGE:
                continue
            for alias in node.names:  # `from . import genotypes` imports a module, `from .x import f` reads x
                sub = f'{target}.{alias.name}'
                found.add(sub if sub in known else within(target) or '')
    found.discard('')
    found.discard(module)
    return found


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph() -> Dict[str, Set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    a = tmp_path / 'a.py'
    a.write_text('def f():\n    from ddarts_zoo.b import g\n')
    known = {'ddarts_zoo', 'ddarts_zoo.a', 'ddarts_zoo.b'}
    graph = {'ddarts_zoo.a': imported_modules('ddarts_zoo.a', a, known),
             'ddarts_zoo.b': {'ddarts_zoo.a'}}
    assert graph['ddarts_zoo.a'] == {'ddarts_zoo.b'}
    assert find_cycle(graph) == ['ddarts_zoo.a', 'ddarts_zoo.b', 'ddarts_zoo.a']


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert 'ddarts_zoo.genotype' in graph['ddarts_zoo.genotypes']  # `from ..genotype import ...`
    assert 'ddarts_zoo.genotypes' in graph['ddarts_zoo.zoo']  # `from . import genotypes as shipped`
    assert 'ddarts_zoo.export' in graph['ddarts_zoo.commands.export']  # imported inside run()


def test_no_import_cycle_in_ddarts_zoo():
    cycle = find_cycle(import_graph())
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle or [])
