"""``ftpc shell``: an interactive session in the style of the classic ftp client.

One login for many commands, a prompt showing the remote folder, readline
history and tab completion (command names, then remote names from a cached
listing, or local names where a local path is expected).  A failing command
prints its one error line and the session goes on.  Before each command the
connection is checked: one the server closed while the prompt waited (its
idle timeout) or that Ctrl-C abandoned mid-transfer is re-established quietly,
with the session and folder restored, so no command is lost to it; only a
connection that dropped on its own is mentioned.  ``!cmd`` runs a local shell
command and ``lls`` lists a local folder, as in sftp.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shlex
import subprocess
from collections.abc import Callable

from .commands import COMMANDS, App, about
from .errors import FtpError
from .failures import SomeFailed, UsageError, describe
from .output import Outcome

BUILTINS: dict[str, str] = {
    "cd": "change the remote folder",
    "lcd": "change the local folder (default: home)",
    "lpwd": "print the local folder",
    "lls": "list a local folder (default: the current one)",
    "!": "!CMD runs CMD in the local shell",
    "help": "list commands, or show one command's options",
    "quit": "end the session (also: exit, bye, Ctrl-D)",
}
QUIT_WORDS = ("quit", "exit", "bye")


class ShellParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (try: help {self.prog.split()[-1]})")


def build_shell_parser() -> ShellParser:
    parser = ShellParser(prog="ftp", add_help=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        cmd.add_to(sub)
    sub.add_parser("cd", help=BUILTINS["cd"]).add_argument("path")
    sub.add_parser("lcd", help=BUILTINS["lcd"]).add_argument("path", nargs="?")
    sub.add_parser("lpwd", help=BUILTINS["lpwd"])
    sub.add_parser("lls", help=BUILTINS["lls"]).add_argument("path", nargs="?")
    sub.add_parser("help", help=BUILTINS["help"]).add_argument("topic", nargs="?")
    return parser


class Shell:
    def __init__(self, app: App, args: argparse.Namespace | None = None) -> None:
        self.app = app
        self.parser = build_shell_parser()
        self.subparsers = {name: p for action in self.parser._subparsers._group_actions  # type: ignore[union-attr]
                           for name, p in action.choices.items()}
        self._listings: dict[str, list[str]] = {}
        self._matches: list[str] = []
        self._builtins: dict[str, Callable[[argparse.Namespace], None]] = {
            "cd": self._cd, "lcd": self._lcd, "lpwd": self._lpwd, "lls": self._lls,
            "help": self._help}
        #: the last command was interrupted: its connection was dropped on purpose
        self._interrupted = False

    @property
    def prompt(self) -> str:
        return f"ftp:{self.app.client.cwd}> "

    # ------------------------------------------------------------ loop

    def run(self) -> int:
        self._setup_readline()
        while True:
            try:
                line = input(self.prompt)
            except EOFError:
                print(file=self.app.out.stdout)
                break
            except KeyboardInterrupt:
                print(file=self.app.out.stdout)
                continue
            if not self.execute(line):
                break
        if self.app.client.connected:
            try:
                self.app.client.quit()
            except FtpError:
                pass
        return 0

    def execute(self, line: str) -> bool:
        """Run one line; False means the session should end."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.app.out.error(describe(UsageError(str(exc))))
            return True
        if not words:
            return True
        if line.lstrip().startswith("!"):
            self._bang(line.lstrip()[1:])
            return True
        if words[0] in QUIT_WORDS:
            return False
        try:
            if words[0] not in self.subparsers:
                raise UsageError(f"unknown command {words[0]!r} (try: help)")
            args = self.parser.parse_args(words)
            builtin = self._builtins.get(args.command)
            if builtin is not None:
                builtin(args)
            else:
                self._ensure_connected()
                self.app.out.result(COMMANDS[args.command].run(self.app, args))
        except SystemExit:
            pass                                       # "put -h" printed its help
        except (FtpError, OSError, UsageError, SomeFailed, KeyboardInterrupt) as exc:
            self._interrupted = isinstance(exc, KeyboardInterrupt)
            self.app.out.fail(exc)
        finally:
            self._listings.clear()                     # anything may have changed
        return True

    def _ensure_connected(self) -> None:
        """Reconnect (and restore the session) if the connection is gone.

        Said aloud only when it dropped by itself; after the server's idle
        timeout or a Ctrl-C the new connection is made without a word.
        """
        client = self.app.client
        if client.connected and client.server_hung_up():
            self._interrupted = True            # idle timeout: expected, not news
        if not client.connected:
            if not self._interrupted:
                self.app.out.warn(f"the connection to {client.host}:{client.port} was lost; "
                                  "reconnecting")
            client.reconnect()
        self._interrupted = False

    # ------------------------------------------------------------ built-ins

    def _cd(self, args: argparse.Namespace) -> None:
        self._ensure_connected()
        with about(args.path):
            path = self.app.client.cd(args.path)
        self.app.out.result(Outcome({"path": path}))

    def _lcd(self, args: argparse.Namespace) -> None:
        os.chdir(os.path.expanduser(args.path or "~"))
        self.app.out.result(Outcome({"path": os.getcwd()}, f"local folder: {os.getcwd()}"))

    def _lpwd(self, args: argparse.Namespace) -> None:
        self.app.out.result(Outcome({"path": os.getcwd()}, os.getcwd()))

    def _lls(self, args: argparse.Namespace) -> None:
        folder = os.path.expanduser(args.path or ".")
        names = sorted(n + ("/" if os.path.isdir(os.path.join(folder, n)) else "")
                       for n in os.listdir(folder))
        self.app.out.result(Outcome({"path": folder, "names": names}, "\n".join(names) or None))

    def _bang(self, command: str) -> None:
        """``!cmd``: run it in the local shell (an empty one: start ``$SHELL``)."""
        command = command.strip() or os.environ.get("SHELL", "/bin/sh")
        self.app.out.stdout.flush()
        try:
            status = subprocess.call(command, shell=True)   # noqa: S602 -- the user's own shell
        except KeyboardInterrupt:
            status = 130
        if status:
            self.app.out.warn(f"!{command}: exit status {status}")

    def _help(self, args: argparse.Namespace) -> None:
        if args.topic:
            if args.topic not in self.subparsers:
                raise UsageError(f"no such command {args.topic!r}")
            text = self.subparsers[args.topic].format_help().rstrip()
        else:
            rows = {**{n: c.help for n, c in COMMANDS.items()}, **BUILTINS}
            text = "\n".join(f"  {name:<8} {rows[name]}" for name in sorted(rows))
            text = f"commands (help COMMAND for its options):\n{text}"
        print(text, file=self.app.out.stdout)

    # ------------------------------------------------------------ completion

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:         # no readline: plain input() still works
            return
        readline.set_completer(self._complete)
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(1000)

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            import readline

            before = readline.get_line_buffer()[:readline.get_begidx()]
            try:
                self._matches = self.completions(before, text)
            except Exception:       # never let completion break the prompt
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    def completions(self, before: str, text: str) -> list[str]:
        """Candidates for ``text`` given the line ``before`` it."""
        words = before.split()
        if not words:
            names = sorted({*self.subparsers, *QUIT_WORDS})
            return [n + " " for n in names if n.startswith(text)]
        cmd = words[0]
        positional = [w for w in words[1:] if not w.startswith("-")]
        if cmd == "lcd":
            return self._local(text, dirs_only=True)
        if (cmd == "put" and not positional) or (cmd == "get" and len(positional) == 1):
            return self._local(text, dirs_only=False)
        return self._remote(text, dirs_only=cmd in ("cd", "rmdir"))

    def _remote(self, text: str, *, dirs_only: bool) -> list[str]:
        head, prefix = text[:text.rfind("/") + 1], text[text.rfind("/") + 1:]
        client = self.app.client
        key = posixpath.join(client.cwd, head)
        if key not in self._listings:
            if not client.connected:
                return []
            entries = client.ls(head or ".").entries
            self._listings[key] = sorted(e.name + ("/" if e.type == "dir" else "")
                                         for e in entries)
        return [head + n for n in self._listings[key]
                if n.startswith(prefix) and (n.endswith("/") or not dirs_only)]

    @staticmethod
    def _local(text: str, *, dirs_only: bool) -> list[str]:
        head, prefix = os.path.split(text)
        folder = os.path.expanduser(head) or "."
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        out = []
        for name in names:
            if not name.startswith(prefix):
                continue
            is_dir = os.path.isdir(os.path.join(folder, name))
            if dirs_only and not is_dir:
                continue
            out.append(os.path.join(head, name) + (os.sep if is_dir else ""))
        return out
