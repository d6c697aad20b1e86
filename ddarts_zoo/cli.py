"""``ddarts-zoo`` command line: one sub-command per module in :mod:`ddarts_zoo.commands`.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported
only when their command runs, so ``ddarts-zoo --help`` stays fast.  Bad input (a :class:`UserError`: file,
value, genotype) ends as one line ``error: ...`` on stderr and exit code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import run_cli

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
    'digits-det': ('ddarts_zoo.commands.digits_det', 'generate the digits-det detection set where the configs read '
                   'it (data/digits-det)'),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (for its arguments), the others are listed by name."""
    parser = argparse.ArgumentParser(prog='ddarts-zoo', description='D-DARTS / DARTOpti model zoo tools')
    parser.add_argument('--debug', action='store_true',
                        help='on an error, show the full traceback instead of one `error:` line')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(sp)
    return parser


def _run_command(argv: List[str]) -> int:
    command = next((a for a in argv if not a.startswith('-')), None)  # the top level has no other options
    args = build_parser(command).parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ddarts-zoo ARGV``; returns the exit code (2 for bad input, reported as one ``error:`` line)."""
    return run_cli(_run_command, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
