"""The `tinygpt` command line, and the wrapper that turns a stage's user errors into one clean line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import tinygpt
from tinygpt.core import timing
from tinygpt.core.allocator import keep_freed_memory
from tinygpt.core.errors import TinyGptError
from tinygpt.pipeline import params

MODEL_HELP = ("a model directory (ours, e.g. models/pretrain, or a Hugging Face GPT-2 one, e.g. models/hf) "
              "or an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/PATH)")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a fixable error prints as one line on stderr and exits with status 1."""
    keep_freed_memory()  # every stage allocates and frees large tensors in a loop (see tinygpt.core.allocator)
    timing.profile()  # the stage's time profile: its start-up (imports) ends here
    try:
        main()
    except (TinyGptError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def cmd_params(args: argparse.Namespace) -> None:
    from tinygpt.pipeline.sections import SECTIONS, load_all

    sections = load_all(args.file)
    if args.section:
        sections = {args.section: sections[args.section]} if args.section in sections else None
        if sections is None:
            raise params.ParamsError(f"no section '{args.section}'; known: {', '.join(SECTIONS)}")
    print(json.dumps({name: params.as_dict(s) for name, s in sections.items()}, indent=2))


# The model commands import torch (and maybe transformers) inside: `tinygpt params` stays torch-free.
def decoding_of(args: argparse.Namespace, stop_at_eot: bool = True):
    """The streaming.Decoding that the flags of `add_decoding_flags` ask for."""
    from tinygpt.pipeline.streaming import Decoding

    return Decoding(max_tokens=args.max_tokens, temperature=0.0 if args.greedy else args.temperature,
                    top_k=args.top_k or None, top_p=args.top_p, seed=args.seed, stop_at_eot=stop_at_eot)


def cmd_generate(args: argparse.Namespace) -> None:
    from tinygpt.pipeline import streaming

    decoding = decoding_of(args, stop_at_eot=args.stop_at_eot)
    prompt = streaming.read_prompt(args.prompt, args.prompt_file, sys.stdin)
    streaming.write_continuation(args.model, prompt, decoding, args.device)


def cmd_chat(args: argparse.Namespace) -> None:
    from tinygpt.pipeline import chat

    chat.talk(args.model, decoding_of(args), args.user, args.replier, args.device)


def cmd_info(args: argparse.Namespace) -> None:
    from tinygpt.pipeline import model_info

    info = model_info.describe(args.model)
    print(json.dumps(info, indent=2) if args.json else model_info.info_text(info))


def add_decoding_flags(parser: argparse.ArgumentParser, max_tokens_help: str, seed_help: str,
                       max_tokens: int = 100) -> None:
    """The flags of `decoding_of`, with the same defaults for every command that samples text."""
    parser.add_argument("--max-tokens", type=int, default=max_tokens, help=f"{max_tokens_help} (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="softmax temperature; 0 is greedy (default: %(default)s)")
    parser.add_argument("--greedy", action="store_true", help="always the most likely token (temperature 0)")
    parser.add_argument("--top-k", type=int, default=200,
                        help="sample among the k most likely tokens; 0 is off (default: %(default)s)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling: the smallest set with this probability "
                        "(default: off)")
    parser.add_argument("--seed", type=int, default=1337, help=f"{seed_help} (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto picks CUDA, then MPS, then CPU; or cpu, cuda, mps "
                        "(default: %(default)s)")


def add_generate(commands) -> None:
    gen = commands.add_parser("generate", help="continue a prompt, streaming the text as it is sampled")
    gen.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    gen.add_argument("prompt", metavar="PROMPT", nargs="?", help="the text to continue; '-' reads stdin; "
                     "none (and no --prompt-file) samples a fresh document")
    gen.add_argument("--prompt-file", help="read the prompt from this file")
    add_decoding_flags(gen, max_tokens_help="tokens to sample", seed_help="seed of the sampler")
    gen.add_argument("--stop-at-eot", action=argparse.BooleanOptionalAction, default=True,
                     help="stop at the end-of-text token (default: on; --no-stop-at-eot prints it and goes on)")
    gen.set_defaults(handler=cmd_generate)


def add_chat(commands) -> None:
    chat = commands.add_parser("chat", help="talk with a model in the terminal, one character to another",
                               description="Type a line as one character; the model answers as another, its reply "
                               "streamed as it is sampled. /reset starts a new conversation, /quit (or Ctrl-D) "
                               "ends it. The oldest turns are dropped when the conversation outgrows the context.")
    chat.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    chat.add_argument("--as", dest="user", default="ROMEO", metavar="NAME",
                      help="the character you speak as (default: %(default)s)")
    chat.add_argument("--reply-as", dest="replier", default="JULIET", metavar="NAME",
                      help="the character the model answers as (default: %(default)s)")
    # 48: twice a typical Tiny Shakespeare reply (~25 tokens), leaving 80 of the default 128-token context for
    # the conversation
    add_decoding_flags(chat, max_tokens_help="the longest reply, in tokens; a reply also ends at end-of-text or "
                       "a blank line", seed_help="seed of the sampler, one for the whole conversation", max_tokens=48)
    chat.set_defaults(handler=cmd_chat)


def add_info(commands) -> None:
    info = commands.add_parser("info", help="describe a model: format, architecture, parameters, size, metrics")
    info.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    info.add_argument("--json", action="store_true", help="everything, the whole metrics file included, as JSON")
    info.set_defaults(handler=cmd_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygpt", description="GPT-2 from raw text to RLHF.")
    parser.add_argument("--version", action="version", version=f"tinygpt {tinygpt.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = commands.add_parser("params", help="print the validated, resolved parameters as JSON")
    show.add_argument("--file", default=str(params.PARAMS_FILE), help="params file (default: params.yaml)")
    show.add_argument("--section", help="only this section (e.g. train)")
    show.set_defaults(handler=cmd_params)
    add_generate(commands)
    add_chat(commands)
    add_info(commands)
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
