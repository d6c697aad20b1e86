"""``ddarts-zoo`` command line: one sub-command per module in :mod:`ddarts_zoo.commands`.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported
only when their command runs, so ``ddarts-zoo --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Tuple

# name -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    'info': ('ddarts_zoo.commands.info', 'table of registered models: genotype, cells, params, MACs, weights'),
    'demo': ('ddarts_zoo.commands.demo', 'build every model, print the table, run digits through one model'),
    'export': ('ddarts_zoo.commands.export', 'training checkpoint -> Hub-ready folder (safetensors, config, card)'),
    'publish': ('ddarts_zoo.commands.publish', 'upload an export folder to the Hugging Face Hub'),
    'convert-official': ('ddarts_zoo.commands.convert_official', "authors' checkpoint -> export folder (strict)"),
    'distance': ('ddarts_zoo.commands.distance', 'architecture distance of two genotypes, or a matrix'),
    'plot': ('ddarts_zoo.commands.plot', 'draw the cells of a genotype as DAGs (.png, .svg, .pdf)'),
    'stats': ('ddarts_zoo.commands.stats', 'op counts per cell, parameter share per op type'),
    'train': ('ddarts_zoo.commands.train', 'train a derived network from scratch (the paper\'s final recipe)'),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (for its arguments), the others are listed by name."""
    parser = argparse.ArgumentParser(prog='ddarts-zoo', description='D-DARTS / DARTOpti model zoo tools')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(sp)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)  # the top level has no other options
    args = build_parser(command).parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
