"""Commands about the session rather than files: pwd, whoami, quota, ping."""

from __future__ import annotations

import argparse

from .output import Outcome
from .progress import human_size
from .registry import App, command


@command("pwd", "print the remote working folder")
def do_pwd(app: App, a: argparse.Namespace) -> Outcome:
    path = app.client.pwd()
    return Outcome({"path": path}, path)


@command("whoami", "print the logged-in user")
def do_whoami(app: App, a: argparse.Namespace) -> Outcome:
    user = app.client.whoami()
    return Outcome({"user": user}, user or "(not logged in)")


@command("quota", "show used, reserved and free space")
def do_quota(app: App, a: argparse.Namespace) -> Outcome:
    q = app.client.quota()
    text = (f"used {human_size(q.used)} ({q.used}), reserved {human_size(q.reserved)} "
            f"({q.reserved}), limit {human_size(q.limit)} ({q.limit}), "
            f"free {human_size(q.free)} ({q.free})")
    return Outcome(q, text)


@command("ping", "check that the server answers", login=False)
def do_ping(app: App, a: argparse.Namespace) -> Outcome:
    seconds = app.client.ping()
    c = app.client
    return Outcome({"host": c.host, "port": c.port, "seconds": seconds},
                   f"pong from {c.host}:{c.port}: {seconds * 1000:.2f} ms")
