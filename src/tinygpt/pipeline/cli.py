"""The `tinygpt` command line, and the wrapper that turns a stage's user errors into one clean line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import tinygpt
from tinygpt.core.allocator import keep_freed_memory
from tinygpt.core.errors import TinyGptError
from tinygpt.pipeline import params


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a fixable error prints as one line on stderr and exits with status 1."""
    keep_freed_memory()  # every stage allocates and frees large tensors in a loop (see tinygpt.core.allocator)
    try:
        main()
    except (TinyGptError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def cmd_params(args: argparse.Namespace) -> None:
    sections = params.load_all(args.file)
    if args.section:
        sections = {args.section: sections[args.section]} if args.section in sections else None
        if sections is None:
            raise params.ParamsError(f"no section '{args.section}'; known: {', '.join(params.SECTIONS)}")
    print(json.dumps({name: params.as_dict(s) for name, s in sections.items()}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygpt", description="GPT-2 from raw text to RLHF.")
    parser.add_argument("--version", action="version", version=f"tinygpt {tinygpt.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = commands.add_parser("params", help="print the validated, resolved parameters as JSON")
    show.add_argument("--file", default=str(params.PARAMS_FILE), help="params file (default: params.yaml)")
    show.add_argument("--section", help="only this section (e.g. train)")
    show.set_defaults(handler=cmd_params)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        sys.exit(2)
    run_stage(lambda: args.handler(args))


if __name__ == "__main__":
    main()
