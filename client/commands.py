"""The commands shared by ``ftpc COMMAND`` and the interactive shell.

Each command is declared once, in ``registry`` style -- name, help,
arguments, whether it needs a login -- and runs against an ``App`` (a
connected ``Client`` plus where output goes), returning an ``Outcome``.  The
CLI and the shell differ only in how they get a line and what they do after an
error.  Importing this module registers every command, in ``--help`` order.
"""

from __future__ import annotations

from . import cmd_files as _files  # noqa: F401 -- registers ls, stat, mkdir, rm, ...
from . import cmd_session as _session  # noqa: F401 -- registers pwd, whoami, quota, ping
from . import cmd_transfer as _transfer  # noqa: F401 -- registers put, mput, get, mget
from .registry import COMMANDS, App, Command, about, local_target, remote_target

#: ``--help`` and the shell's ``help`` list the transfers first, as before the split.
_ORDER = ("put", "mput", "get", "mget", "ls", "stat", "mkdir", "rmdir", "rm", "mv", "pwd",
          "whoami", "quota", "hash", "uploads", "abort", "ping")
for _name in sorted(COMMANDS, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
    COMMANDS[_name] = COMMANDS.pop(_name)

__all__ = ["COMMANDS", "App", "Command", "about", "local_target", "remote_target"]
