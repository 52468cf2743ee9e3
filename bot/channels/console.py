"""The terminal chat: buttons print as numbered lines; a typed number presses one.

When standard input is not a terminal it reads one input per line until the end and
exits 0, so whole conversations can be piped in.
"""

from __future__ import annotations

from typing import TextIO

from bot.app import Assistant
from bot.events import Button, Incoming, Reply

CONSOLE_USER = "terminal"


def render(reply: Reply) -> str:
    lines = [reply.text]
    for number, button in enumerate(reply.buttons, start=1):
        lines.append(f"  [{number}] {button.label}")
    if reply.document is not None:
        lines.append(f"----- {reply.document.filename} -----")
        lines.append(reply.document.content.rstrip("\n"))
        lines.append("-" * (12 + len(reply.document.filename)))
    return "\n".join(lines)


class ConsoleChat:
    def __init__(self, assistant: Assistant, stdout: TextIO, user: str = CONSOLE_USER) -> None:
        self.assistant = assistant
        self.stdout = stdout
        self.key = assistant.key_for("console", user)
        self.buttons: tuple[Button, ...] = ()

    def send(self, incoming: Incoming) -> None:
        outcome = self.assistant.handle(self.key, incoming)
        for reply in outcome.replies:
            self.stdout.write(render(reply) + "\n\n")
            if reply.buttons:
                self.buttons = reply.buttons
        if outcome.erase:
            self.buttons = ()
        self.stdout.flush()

    def incoming_for(self, line: str) -> Incoming:
        text = line.strip()
        if text.startswith("/"):
            return Incoming("command", text)
        if text.isdecimal() and len(text) < 6 and 1 <= int(text) <= len(self.buttons):
            return Incoming("button", self.buttons[int(text) - 1].data)
        return Incoming("text", line.rstrip("\r\n"))

    def start(self, lang: str | None, mode: str) -> None:
        payload = {"volunteer": " vrijwilliger", "lesson": " les"}.get(mode, "")
        if not payload and lang:
            payload = f" {lang}"
        self.send(Incoming("command", f"/start{payload}"))
        if payload.strip() not in ("", lang) and lang:
            self.send(Incoming("command", f"/taal {lang}"))


def run(
    assistant: Assistant,
    stdin: TextIO,
    stdout: TextIO,
    lang: str | None = None,
    mode: str = "user",
) -> int:
    chat = ConsoleChat(assistant, stdout)
    interactive = stdin.isatty()
    chat.start(lang, mode)
    while True:
        if interactive:
            stdout.write("> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            return 0
        if not interactive:
            stdout.write(f"> {line.rstrip()}\n\n")
        chat.send(chat.incoming_for(line))
