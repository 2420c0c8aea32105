"""The session-token cache: a second ``ftpc`` command does not ask for the password.

After a password login the daemon's session token (valid for ``token_ttl``,
a day by default) is kept per ``user@host:port`` in
``$XDG_CACHE_HOME/ftpc/sessions.json`` (``~/.cache/ftpc``), a file of mode 0600
in a folder of mode 0700, written whole and renamed into place.  A token the
server refuses (expired, a restarted server) is dropped and the password asked
for again; ``ftpc logout`` forgets it.  Only a password typed at the prompt
leads to a cached token: whoever sets ``FTPC_PASSWORD`` or keeps ``~/.netrc``
has chosen their own storage.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .remotes import check_private


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ftpc" / "sessions.json"


def _key(user: str, host: str, port: int) -> str:
    return f"{user}@{host}:{port}"


def _load(path: Path) -> dict[str, str]:
    try:
        check_private(path)
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) \
        else {}


def _save(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sessions-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def get(user: str, host: str, port: int) -> str | None:
    return _load(cache_path()).get(_key(user, host, port))


def put(user: str, host: str, port: int, token: str) -> None:
    path = cache_path()
    data = _load(path)
    data[_key(user, host, port)] = token
    _save(path, data)


def forget(user: str, host: str, port: int) -> bool:
    """Drop the token; whether there was one."""
    path = cache_path()
    data = _load(path)
    if data.pop(_key(user, host, port), None) is None:
        return False
    _save(path, data)
    return True
