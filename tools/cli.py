"""``python -m tools <command>`` (also installed as the ``atlas`` console script).

Each command lives in its own module under ``tools/commands/`` with ``NAME``, ``HELP``, ``configure(parser)`` and
``run(args) -> int``; add a module to COMMAND_MODULES to add a command. Exit codes: 0 success, 1 the catalogue has
problems (or a remote source failed), 2 a usage error. Bad input is reported as ``file:line: field: message``, never
as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tools.catalogue.problems import ProblemError, UserError, print_problems

COMMAND_MODULES = [
    "tools.commands.validate",
    "tools.commands.new",
    "tools.commands.schema",
    "tools.commands.reconcile",
    "tools.commands.site",
    "tools.commands.bib",
    "tools.commands.readme",
    "tools.commands.add",
    "tools.commands.enrich",
    "tools.commands.discover",
    "tools.commands.triage",
]

__all__ = ["COMMAND_MODULES", "UserError", "print_problems", "build_parser", "main"]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The argument parser with one sub-command per module of COMMAND_MODULES, and those modules by name."""
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(cmd)
        modules[module.NAME] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code (0 ok, 1 problems, 2 usage error, 130 interrupted)."""
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except ProblemError as exc:
        print_problems(exc.problems)
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
