"""Where to connect and as whom: ``user@host[:port]``, named remotes, ``~/.netrc``.

Precedence, highest first: the command line (``--host``/``--port``/``--user``,
where ``--host`` may be ``user@host[:port]`` or the name of a remote), the
environment (``FTPC_HOST``, ``FTPC_PORT``, ``FTPC_USER``), the config file's
named remote, the built-in defaults.  A password never comes from the command
line: only from ``FTPC_PASSWORD``, a cached session token, ``~/.netrc``, or the
terminal.

The config file, ``$XDG_CONFIG_HOME/ftpc/config.toml`` (``~/.config/ftpc``),
must not be readable by others (mode 0600, as ssh insists for its keys)::

    default = "home"          # the remote used when no --host is given

    [remote.home]
    host = "files.example.org"
    port = 2121
    user = "alice"
    fingerprint = "sha256:..."  # reserved: the TLS certificate to pin

"""

from __future__ import annotations

import netrc
import os
import stat as stat_module
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .failures import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2121
_REMOTE_KEYS = {"host", "port", "user", "fingerprint"}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".config")
    return Path(base) / "ftpc"


def config_path() -> Path:
    return Path(os.environ.get("FTPC_CONFIG") or config_dir() / "config.toml")


@dataclass(frozen=True)
class Remote:
    """Where to connect: host, port, user, and the pinned TLS fingerprint (if any)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    user: str | None = None
    fingerprint: str | None = None
    name: str | None = None


def check_private(path: Path) -> None:
    """Refuse a file that others may read or write (like ssh), naming the fix."""
    mode = stat_module.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UsageError(f"{path} is accessible by others (mode {mode:04o}); "
                         f"run: chmod 600 {path}")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The config file as a dict ({} if there is none)."""
    path = path or config_path()
    if not path.exists():
        return {}
    check_private(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}")
    for name, table in (data.get("remote") or {}).items():
        unknown = set(table) - _REMOTE_KEYS
        if unknown:
            raise UsageError(f"{path}: remote {name!r}: unknown setting "
                             f"{', '.join(sorted(unknown))} (known: "
                             f"{', '.join(sorted(_REMOTE_KEYS))})")
    return data


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` -> (user, host, port).  ``[::1]:2121`` works too."""
    user, at, rest = text.rpartition("@")
    if not at:
        user, rest = "", text
    if ":" in user:
        raise UsageError("a password never goes on the command line: drop ':...' from "
                         "the user and use FTPC_PASSWORD, ~/.netrc or the prompt")
    port: int | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:])
    elif rest.count(":") == 1:
        host, _, number = rest.partition(":")
        port = _port(number)
    else:
        host = rest
    if not host:
        raise UsageError(f"no host in {text!r}")
    return user or None, host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"not a port number: {text!r}")
    return int(text)


def resolve(host: str | None, port: int | None, user: str | None,
            config: dict[str, Any] | None = None) -> Remote:
    """The remote for the given options (None: not given) and the config file.

    Host: ``--host``, else ``FTPC_HOST``, else the config's ``default`` remote; it
    may name a remote or be ``[user@]host[:port]``.  Port: ``--port``, else the
    one in the target or remote, else ``FTPC_PORT``, else 2121.  User: ``--user``,
    else the target's or remote's, else ``FTPC_USER``.
    """
    config = config if config is not None else load_config()
    env = os.environ
    remotes = config.get("remote") or {}
    target = host or env.get("FTPC_HOST") or config.get("default") or DEFAULT_HOST
    name = fingerprint = None
    if target in remotes:
        table = remotes[target]
        name, fingerprint = target, table.get("fingerprint")
        t_user, t_host, t_port = table.get("user"), str(table.get("host", DEFAULT_HOST)), \
            table.get("port")
    else:
        t_user, t_host, t_port = parse_target(target)
    env_port = env.get("FTPC_PORT")
    final_port = port or t_port or (_port(env_port) if env_port else DEFAULT_PORT)
    return Remote(t_host, int(final_port), user or t_user or env.get("FTPC_USER"),
                  fingerprint, name)


def netrc_password(host: str, user: str | None) -> tuple[str, str] | None:
    """(login, password) from ``$NETRC`` or ``~/.netrc`` for ``host``, as curl reads it:
    the ``machine`` entry (else ``default``), whose login must match ``user`` if given."""
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.exists(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise UsageError(f"{path}: {exc}")
    if entry is None:
        return None
    login, _, password = entry
    if not password or (user and login and login != user):
        return None
    return (login or user or ""), password


#: The keyring service name under which ``ftpc`` looks for passwords.
KEYRING_SERVICE = "ftpc"


def keyring_password(user: str, host: str, port: int) -> str | None:
    """The password stored in the system keyring (``keyring set ftpc USER@HOST:PORT``),
    when the optional ``keyring`` package is installed and has a backend."""
    try:
        import keyring  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, f"{user}@{host}:{port}")
    except Exception:       # noqa: BLE001 -- no usable backend: as if there were none
        return None
