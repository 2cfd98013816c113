"""`tinygpt chat`: each prompt is the chat template of the history, kept within the context by dropping the
oldest turns; a reply stops at end-of-text or before a blank line; a real terminal session (tmux, and a bare
pty) answers two lines and ends with status 0 on /quit; user errors are one line and status 1."""
import io
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import torch

from tinygpt.data.dialogue import Turn, prompt_text
from tinygpt.data.tokenizer import EOT_ID, N_VOCAB, decode, encode
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.pipeline import chat, cli, streaming
from tinygpt.pipeline.streaming import Decoding
from tinygpt.rlhf.reward_model import RewardModel, save_reward_model

pytestmark = pytest.mark.usefixtures("single_thread")

BLOCK_SIZE = 128
NEWLINE, BLANK_LINE = encode("\n")[0], encode("\n\n")[0]  # GPT-2 has one token for "\n\n"
assert BLANK_LINE != NEWLINE and decode([BLANK_LINE]) == "\n\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny GPT-2-vocabulary model with room for a few turns (test_cli's has a context of 16 tokens, less
    than one exchange of the template), saved in our format."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=N_VOCAB, block_size=BLOCK_SIZE, n_layer=1, n_head=2, n_embd=8)).eval()
    directory = tmp_path_factory.mktemp("chat") / "model"
    weights.save_model(model, directory)
    return directory, model


class Terminal(io.StringIO):
    """A stdout that keeps, at every flush, what was written since the one before: what a user saw when."""

    def __init__(self):
        super().__init__()
        self.shown = []

    def flush(self):
        self.shown.append(self.getvalue()[sum(map(len, self.shown)):])


class ScriptedSampler:
    """Stands in for sampling.stream: records the ids of every prompt and the generator it was given, and
    draws the next scripted reply (at most max_new_tokens ids, ending after end-of-text as stream does)."""

    def __init__(self, replies):
        self.replies, self.prompts, self.generators, self.drawn = list(replies), [], [], []

    def __call__(self, model, prompt_ids, max_new_tokens, temperature, top_k, top_p, generator, eot_id):
        self.prompts.append(list(prompt_ids))
        self.generators.append(generator)
        self.drawn.append(0)
        for token in self.replies.pop(0)[:max_new_tokens]:
            self.drawn[-1] += 1
            yield token
            if token == eot_id:
                return


def scripted(monkeypatch, replies) -> ScriptedSampler:
    sampler = ScriptedSampler(replies)
    monkeypatch.setattr(streaming, "stream", sampler)
    return sampler


def converse(model, lines: str, max_tokens=8, temperature=0.0, seed=1337) -> tuple[chat.Chat, Terminal, io.StringIO]:
    session = chat.Chat(model, Decoding(max_tokens=max_tokens, temperature=temperature, seed=seed))
    out, stdin = Terminal(), io.StringIO(lines)
    chat.converse(session, stdin, out)
    return session, out, stdin


# ---------------------------------------------------------------- the session, in process

def test_replies_stop_at_end_of_text_or_before_a_blank_line_and_join_the_history(tiny_model, monkeypatch):
    sampler = scripted(monkeypatch, [
        encode("Good night, good night!") + [EOT_ID] + encode(" unseen"),
        encode("Parting is") + [NEWLINE] + encode("such sweet") + [NEWLINE, NEWLINE] + encode("ROMEO"),
        encode("Sorrow") + [BLANK_LINE] + encode("ROMEO:"),
        encode(" word") * 20,  # never ends by itself: cut at --max-tokens 8
    ])
    lines = "Good morrow, fair maid\n\nWilt thou leave me?\n  What?  \nMore\n/quit\nnever read\n"
    session, out, stdin = converse(tiny_model[1], lines)
    assert out.getvalue() == ("ROMEO> JULIET: Good night, good night!\n"
                          "ROMEO> ROMEO> JULIET: Parting is\nsuch sweet\n"  # the empty line is ignored
                          "ROMEO> JULIET: Sorrow\n"
                          f"ROMEO> JULIET: {' word' * 8}\n"
                          "ROMEO> ")
    assert stdin.read() == "never read\n"  # /quit ended the session
    # Sampling stopped at the blank line: nothing after it was drawn.
    assert sampler.drawn == [len(encode("Good night, good night!")) + 1,
                             len(encode("Parting is")) + 1 + len(encode("such sweet")) + 2,
                             len(encode("Sorrow")) + 1, 8]
    # The reply is shown a token at a time (the held line break with the token after it), never the blank line.
    assert out.shown[:5] == ["ROMEO> ", "JULIET: ", *(decode([t]) for t in encode("Good night, good night!")[:3])]
    assert "\nsuch" in out.shown and not any("\n\n" in piece for piece in out.shown)
    assert "".join(out.shown) == out.getvalue()
    # The second prompt, written out by hand: the chat template of the history so far.
    assert decode(sampler.prompts[1]) == ("ROMEO:\nGood morrow, fair maid\n\nJULIET:\nGood night, good night!\n\n"
                                          "ROMEO:\nWilt thou leave me?\n\nJULIET:\n")
    history = [Turn("ROMEO", "Good morrow, fair maid"), Turn("JULIET", "Good night, good night!"),
               Turn("ROMEO", "Wilt thou leave me?"), Turn("JULIET", "Parting is\nsuch sweet"),
               Turn("ROMEO", "What?"), Turn("JULIET", "Sorrow"), Turn("ROMEO", "More"),
               Turn("JULIET", "word " * 7 + "word")]
    assert sampler.prompts == [encode(prompt_text(history[:i], "JULIET")) for i in (1, 3, 5, 7)]
    assert session.history == history
    assert all(g is session.generator for g in sampler.generators)  # one seeded generator for the session


def test_reset_clears_the_history_and_end_of_input_ends_the_session(tiny_model, monkeypatch):
    sampler = scripted(monkeypatch, [encode("Ay.") + [EOT_ID], encode("No.") + [EOT_ID]])
    session, out, _ = converse(tiny_model[1], "Hello\n/reset\nHello again\n")
    assert decode(sampler.prompts[1]) == "ROMEO:\nHello again\n\nJULIET:\n"
    assert session.history == [Turn("ROMEO", "Hello again"), Turn("JULIET", "No.")]
    assert out.getvalue().endswith("JULIET: No.\nROMEO> \n")  # the shell's prompt goes on a line of its own


def test_the_oldest_turns_go_when_the_conversation_outgrows_the_context(tiny_model, monkeypatch, capsys):
    room = BLOCK_SIZE - 8
    ordinals = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth", "Ninth", "Tenth")
    sampler = scripted(monkeypatch, [encode("Ay, my lord.") + [EOT_ID]] * len(ordinals))
    said = [f"{ordinal} speech of mine, of roses and of names" for ordinal in ordinals]
    session, _, _ = converse(tiny_model[1], "".join(line + "\n" for line in said))
    history = []
    for line, prompt in zip(said, sampler.prompts):
        history.append(Turn("ROMEO", line))
        # The newest turns that fit, found by trying every suffix from the longest.
        fits = next(history[i:] for i in range(len(history)) if len(encode(prompt_text(history[i:], "JULIET"))) <= room)
        assert prompt == encode(prompt_text(fits, "JULIET")) and len(prompt) <= room
        history = fits + [Turn("JULIET", "Ay, my lord.")]
    assert "First" not in decode(sampler.prompts[-1]) and len(history) < 2 * len(said)  # turns were dropped
    assert session.history == history
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 1 and "oldest turns are dropped" in notices[0]  # told once


def test_a_line_longer_than_the_context_keeps_its_end(tiny_model, monkeypatch, capsys):
    sampler = scripted(monkeypatch, [encode("What?") + [EOT_ID]])
    line = " ".join(f"word{i}" for i in range(BLOCK_SIZE)) + " the end"
    converse(tiny_model[1], line + "\n")
    prompt = decode(sampler.prompts[0])
    assert BLOCK_SIZE - 8 - 2 <= len(sampler.prompts[0]) <= BLOCK_SIZE - 8  # as much of the line as fits
    assert prompt.startswith("ROMEO:\nword") and prompt.endswith(f" word{BLOCK_SIZE - 1} the end\n\nJULIET:\n")
    assert "word0 " not in prompt
    assert "reads only the line's end" in capsys.readouterr().err


def greedy_continuation(model, prompt: str, n: int) -> list[int]:
    """n greedy ids after `prompt` by the full forward (no KV cache, not the sampler chat runs on)."""
    ids = torch.tensor([encode(prompt)])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids[:, -BLOCK_SIZE:])[0][:, -1:].argmax(dim=-1)], dim=1)
    return ids[0, -n:].tolist()


def as_reply(ids: list[int]) -> str:
    """What chat prints of a continuation: up to end-of-text, before a blank line, no trailing line break."""
    text = decode(ids[: ids.index(EOT_ID)] if EOT_ID in ids else ids).split("\n\n")[0]
    return text[:-1] if text.endswith("\n") else text


def test_greedy_replies_are_the_models_continuations_of_the_template(tiny_model):
    model = tiny_model[1]
    first = as_reply(greedy_continuation(model, "ROMEO:\nGood morrow\n\nJULIET:\n", 8))
    second = as_reply(greedy_continuation(
        model, f"ROMEO:\nGood morrow\n\nJULIET:\n{first.strip()}\n\nROMEO:\nFarewell\n\nJULIET:\n", 8))
    _, out, _ = converse(model, "Good morrow\nFarewell\n", temperature=0.0)
    assert out.getvalue() == f"ROMEO> JULIET: {first}\nROMEO> JULIET: {second}\nROMEO> \n"


def test_a_seed_makes_a_session_repeatable_and_one_generator_serves_every_reply(tiny_model):
    def session(seed):
        return converse(tiny_model[1], "Hello\n/reset\nHello\n", temperature=1.0, seed=seed)[1].getvalue()

    transcript = session(1)
    assert transcript == session(1) and transcript != session(2)
    first, second = [line for line in transcript.split("ROMEO> ") if line.startswith("JULIET: ")]
    assert first != second  # the same prompt after /reset: the generator went on, it was not seeded again


# ---------------------------------------------------------------- errors

def fails(args, capsys) -> str:
    """The one line on stderr of a CLI call that must exit with status 1."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["chat", *args, "--device", "cpu"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_errors_are_one_line_and_exit_1(tiny_model, tmp_path, capsys):
    directory = str(tiny_model[0])
    assert f"{tmp_path / 'absent'}: does not exist" in fails([str(tmp_path / "absent")], capsys)
    save_reward_model(RewardModel(weights.load_model(tiny_model[0])), tmp_path / "reward")
    assert f"{tmp_path / 'reward'}: a reward model" in fails([str(tmp_path / "reward")], capsys)
    assert "--as 'ROMEO:' is invalid" in fails([directory, "--as", "ROMEO:"], capsys)
    assert "--reply-as 'JU\\nLIET' is invalid" in fails([directory, "--reply-as", "JU\nLIET"], capsys)
    err = fails([directory, "--max-tokens", str(BLOCK_SIZE)], capsys)
    assert f"--max-tokens {BLOCK_SIZE} leaves no room" in err and f"block_size = {BLOCK_SIZE}" in err
    smallest = len(encode(prompt_text([Turn("ROMEO", "Hi")], "JULIET")))
    err = fails([directory, "--max-tokens", str(BLOCK_SIZE - smallest + 1)], capsys)
    assert f"give --max-tokens {BLOCK_SIZE - smallest} or less" in err
    assert "--top-p 2.0 is invalid" in fails([directory, "--top-p", "2"], capsys)


# ---------------------------------------------------------------- a real terminal

COMMAND = ["-m", "tinygpt.pipeline.cli", "chat"]
FLAGS = ["--as", "ROMEO", "--reply-as", "JULIET", "--max-tokens", "8", "--seed", "1", "--device", "cpu"]
LINES = ["Good morrow, fair maid", "What light through yonder window breaks?"]


def wait_for(read, ready, what: str, timeout_s: float = 60.0) -> str:
    """Poll `read()` until `ready` holds of its text; a timeout shows what the terminal shows."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = read()
        if ready(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s:.0f} s; the terminal shows:\n{text}")
        time.sleep(0.1)


def prompts(text: str) -> int:
    return sum(line.startswith("ROMEO>") for line in text.splitlines())


def replies(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.startswith("JULIET:")]


def expected_replies(tiny_model) -> list[str]:
    """The same session in process: the terminal must show the same replies."""
    out = io.StringIO()
    chat.talk(str(tiny_model[0]), Decoding(max_tokens=8, seed=1), "ROMEO", "JULIET", "cpu",
              io.StringIO("".join(line + "\n" for line in LINES)), out)
    return replies(out.getvalue().replace("ROMEO> ", "ROMEO> \n"))  # where the terminal echoes the line typed


def test_a_terminal_session_in_tmux(tiny_model, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed; test_a_terminal_session_through_a_pty covers a terminal without it")
    name = f"tinygpt-chat-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", name, "-f", "/dev/null"]  # a server of its own: no user config, no other session
    command = " ".join(map(shlex.quote, [sys.executable, *COMMAND, str(tiny_model[0]), *FLAGS]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "200", "-y", "50",
                    f"{command}; echo EXIT=$?; sleep 30"], cwd=tmp_path, env=env, check=True)

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout

    try:
        wait_for(pane, lambda text: prompts(text) == 1, "ROMEO> prompt")
        for n, line in enumerate(LINES, start=1):
            subprocess.run([*tmux, "send-keys", "-t", name, line, "Enter"], check=True)
            wait_for(pane, lambda text: prompts(text) == n + 1 and len(replies(text)) == n, f"reply {n}")
        subprocess.run([*tmux, "send-keys", "-t", name, "/quit", "Enter"], check=True)
        screen = wait_for(pane, lambda text: "EXIT=" in text, "end of the session")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert "EXIT=0" in screen, screen
    assert f"ROMEO> {LINES[0]}" in screen and f"ROMEO> {LINES[1]}" in screen  # the typed lines, echoed
    assert replies(screen) == expected_replies(tiny_model)


def test_a_terminal_session_through_a_pty(tiny_model, tmp_path):
    main_fd, child_fd = os.openpty()
    process = subprocess.Popen([sys.executable, *COMMAND, str(tiny_model[0]), *FLAGS], stdin=child_fd,
                               stdout=child_fd, stderr=child_fd, cwd=tmp_path,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(child_fd)
    shown = []

    def read() -> str:
        while select.select([main_fd], [], [], 0.05)[0]:
            try:
                data = os.read(main_fd, 4096)
            except OSError:  # EIO: the process has gone and closed the terminal
                break
            if not data:
                break
            shown.append(data)
        return b"".join(shown).decode("utf-8", errors="replace").replace("\r\n", "\n")

    try:
        wait_for(read, lambda text: prompts(text) == 1, "ROMEO> prompt")
        for n, line in enumerate(LINES, start=1):
            os.write(main_fd, line.encode() + b"\n")
            wait_for(read, lambda text: prompts(text) == n + 1 and len(replies(text)) == n, f"reply {n}")
        os.write(main_fd, b"/quit\n")
        assert process.wait(timeout=30) == 0
        screen = read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main_fd)
    assert replies(screen) == expected_replies(tiny_model)
