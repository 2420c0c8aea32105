"""Log lines: bounded per connection, an audit trail, one spelling (issue 13 item 14,
issue 15 admin bugs)."""

from __future__ import annotations

import re

import protocol.messages as m
from ftpd.lograte import LINES_PER_KIND, WINDOW, LogBudget
from protocol import encode, encode_data
from tests.test_hostile_support import wait_until
from tests.wire import Wire


def test_refused_inline_puts_of_one_connection_are_logged_a_bounded_number_of_times(server):
    server.add_user("noisy", "pw")
    refused = 200
    with Wire(server.host, server.port).logged_in("noisy", "pw") as w:
        w.send_raw(b"".join(encode(m.Put(id=100 + i, path="../escape", size=1, inline=True))
                            + encode_data(b"x") for i in range(refused)))
        replies = [w.recv_reply() for _ in range(refused)]
        assert {r.code for r in replies} == {"BAD_PATH"}
        w.call(m.Quit(id=w.next_id()))
    assert wait_until(lambda: "suppressed" in server.log(), 10), server.log()[-3000:]
    text = server.log(settle=True)
    lines = re.findall(r"inline result=failed \(BAD_PATH\)", text)
    assert len(lines) == LINES_PER_KIND, len(lines)
    assert f"suppressed {refused - LINES_PER_KIND} similar lines" in text


def test_a_log_budget_reopens_after_its_window_and_reports_what_it_held_back():
    lines: list[str] = []

    class Logger:
        def info(self, fmt: str, *args: object) -> None:
            lines.append(fmt % args)
    budget = LogBudget(Logger(), "peer")       # type: ignore[arg-type]
    allowed = [budget.allow("kind", 0.0) for _ in range(LINES_PER_KIND + 5)]
    assert allowed.count(True) == LINES_PER_KIND and not lines
    assert budget.allow("other kind", 1.0)                   # kinds are counted apart
    assert budget.allow("kind", WINDOW)                      # a new window
    assert lines == ["suppressed 5 similar lines peer (kind)"]


def test_changes_to_the_tree_are_logged_with_user_and_path(server):
    server.add_user("auditor", "pw")
    with Wire(server.host, server.port).logged_in("auditor", "pw") as w:
        assert isinstance(w.call(m.Mkdir(id=w.next_id(), path="/dir")), m.MkdirOk)
        assert isinstance(w.put("/dir/f", b"data"), m.PutDone)
        assert isinstance(w.call(m.Mv(id=w.next_id(), src="/dir/f", dst="/g")), m.MvOk)
        assert isinstance(w.call(m.Rm(id=w.next_id(), path="/g")), m.RmOk)
        assert isinstance(w.call(m.Rmdir(id=w.next_id(), path="/dir")), m.RmdirOk)
    expected = [r"INFO ftpd\.handlers: mkdir \S+ user=auditor path=/dir$",
                r"INFO ftpd\.handlers: mv \S+ user=auditor path=/dir/f to=/g$",
                r"INFO ftpd\.handlers: rm \S+ user=auditor path=/g$",
                r"INFO ftpd\.handlers: rmdir \S+ user=auditor path=/dir$"]
    assert wait_until(lambda: all(re.search(p, server.log(), re.M) for p in expected), 10), \
        server.log()[-3000:]


def test_close_reasons_are_lower_case(server_factory):
    server = server_factory(login_timeout=0.5)
    with Wire(server.host, server.port) as w:
        assert w.closed_by_peer()                               # the login timeout
    assert wait_until(lambda: "reason=timeout " in server.log(), 10), server.log()[-2000:]
    assert not re.search(r"reason=[A-Z]", server.log())
