"""``ftpc`` for everyday work (issue 15): the rough edges a new user met, and the
features users of sftp, scp, rsync and curl reach for first -- against a live
daemon unless the behaviour is the client's alone."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from client import Client
from client.cli import main
from client.errors import QuotaError
from client.failures import describe
from tests import test_client_e2e as e2e
from tests.test_client_e2e import (
    REPO,
    MiB,
    ftpc,
    new_user,
    run_main,
    sha,
    spawn,
    wait_for,
)
from tests.test_client_fakeserver import serve_fake

daemon = e2e.daemon          # the module's shared daemon, and a fresh user per test
user = e2e.user


@pytest.fixture
def fake():
    yield from serve_fake(max_data=8192)


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """No test reads or writes the real ~/.config, ~/.cache or ~/.netrc."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "NETRC", "FTPC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# ------------------------------------------------------------ bug 1: special files


def test_get_into_a_fifo_writes_through_it_and_leaves_it_a_fifo(user, tmp_path):
    data = os.urandom(300_000)
    with user.client() as c:
        (tmp_path / "src").write_bytes(data)
        c.put(tmp_path / "src", "f")
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
        reader.start()
        result = c.get("f", str(fifo))
        reader.join(20)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [data] and result.sha256 == sha(data)
    assert not (tmp_path / "fifo.part").exists()


def test_get_through_a_symlink_keeps_the_link(user, tmp_path):
    with user.client() as c:
        (tmp_path / "src").write_bytes(b"new")
        c.put(tmp_path / "src", "f")
        (tmp_path / "real").write_bytes(b"old")
        (tmp_path / "link").symlink_to(tmp_path / "real")
        c.get("f", str(tmp_path / "link"))
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").read_bytes() == b"new"


def test_get_to_dash_writes_the_file_to_stdout(user, tmp_path):
    data = os.urandom(5 * MiB + 7)
    (tmp_path / "src").write_bytes(data)
    assert ftpc(user, "put", str(tmp_path / "src"), "x.bin").returncode == 0
    run = subprocess.run([sys.executable, "-m", "client.cli", "get", "x.bin", "-"],
                         env=user.env(), cwd=REPO, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert hashlib.sha256(run.stdout).hexdigest() == sha(data)


def test_get_to_dash_pipes_into_tar(user, tmp_path):
    src = tree(tmp_path / "t", {"a.txt": b"alpha", "d/b.txt": b"beta"})
    subprocess.run(["tar", "cf", str(tmp_path / "x.tar"), "-C", str(src), "."], check=True)
    assert ftpc(user, "put", str(tmp_path / "x.tar")).returncode == 0
    (tmp_path / "out").mkdir()
    cmd = (f"{sys.executable} -m client.cli get x.tar - | tar xf - -C {tmp_path / 'out'}")
    run = subprocess.run(cmd, shell=True, env=user.env(), cwd=REPO, capture_output=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "d" / "b.txt").read_bytes() == b"beta"


def test_put_dash_uploads_stdin_verified(user, tmp_path):
    data = os.urandom(2 * MiB + 3)
    run = subprocess.run([sys.executable, "-m", "client.cli", "--json", "put", "-", "in.bin"],
                         input=data, env=user.env(), cwd=REPO, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["sha256"] == sha(data)
    with user.client() as c:
        assert c.hash("in.bin").sha256 == sha(data)


# ------------------------------------------------------------ bug 2: tree copies resume


def test_put_r_killed_midway_resumes_and_resends_nothing_finished(user, tmp_path):
    src = tree(tmp_path / "t", {"a-small": os.urandom(1000), "b-big": os.urandom(8 * MiB)})
    proc = spawn(user, "put", "-r", str(src), "--limit-rate", "2M")
    with user.client() as c:
        offset = wait_for(lambda: next((u.offset for u in c.uploads()
                                        if u.path.endswith("b-big") and u.offset > 0), 0))
    proc.kill()
    proc.wait()
    again = ftpc(user, "--json", "put", "-r", str(src))
    assert again.returncode == 0, again.stderr
    plan = {Path(i["source"]).name: i["action"] for i in json.loads(again.stdout)["plan"]}
    assert plan == {"a-small": "skip", "b-big": "resume"}
    (big,) = json.loads(again.stdout)["files"]
    assert big["resumed_from"] >= offset > 0


def test_a_second_identical_put_r_sends_zero_bytes_and_exits_0(user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"1", "sub/b": os.urandom(MiB + 1)})
    first = ftpc(user, "--json", "put", "-r", str(src))
    assert first.returncode == 0 and json.loads(first.stdout)["bytes_sent"] == MiB + 2
    again = ftpc(user, "--json", "put", "-r", str(src))
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["bytes_sent"] == 0 and report["files"] == []
    assert {i["action"] for i in report["plan"]} == {"skip"}


def test_get_r_rerun_skips_finished_files_and_resumes_a_part(user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"aaa", "b": os.urandom(100_000)})
    assert ftpc(user, "put", "-r", str(src)).returncode == 0
    dst = tmp_path / "back"
    assert ftpc(user, "get", "-r", "t", str(dst)).returncode == 0
    (dst / "b").rename(dst / "b.part")
    with open(dst / "b.part", "r+b") as fh:
        fh.truncate(40_000)
    again = ftpc(user, "--json", "get", "-r", "t", str(dst))
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert [i["action"] for i in report["plan"]] == ["skip", "resume"]
    assert report["bytes_sent"] == 60_000 and (dst / "b").read_bytes() == (src / "b").read_bytes()


def test_downloads_keep_the_remote_modification_time(user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"aaa"})
    assert ftpc(user, "put", "-r", str(src)).returncode == 0
    assert ftpc(user, "get", "-r", "t", str(tmp_path / "back")).returncode == 0
    with user.client() as c:
        remote = c.stat("t/a").entry.mtime
    assert abs(os.stat(tmp_path / "back" / "a").st_mtime - remote) < 0.01


def test_dry_run_reports_and_sends_nothing(monkeypatch, capsys, user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"aaa", "b": b"bb"})
    status, out, err = run_main(monkeypatch, capsys, user, "put", "-r", "-n", str(src))
    assert status == 0, err
    assert "would send" in out and "nothing would be sent" in out
    with user.client() as c:
        assert "t" not in [e.name for e in c.ls().entries] and c.uploads() == ()


# ------------------------------------------------------------ bug 3: ls


@pytest.fixture
def listed(monkeypatch, capsys, user, tmp_path):
    files = tree(tmp_path / "t", {"a.bin": b"x" * 3000, "b.md": b"b", ".hidden": b"h",
                                  "sub/c.md": b"c"})
    assert run_main(monkeypatch, capsys, user, "put", "-r", str(files), "d")[0] == 0
    return user


def test_ls_lh_lists_with_human_sizes(monkeypatch, capsys, listed):
    status, out, err = run_main(monkeypatch, capsys, listed, "ls", "-lh", "d")
    assert status == 0, err
    assert "2.9 KiB" in out and "usage" not in out


def test_ls_la_shows_dot_names_and_ls_hides_them(monkeypatch, capsys, listed):
    status, out, _ = run_main(monkeypatch, capsys, listed, "ls", "-la", "d")
    assert status == 0 and ".hidden" in out
    assert ".hidden" not in run_main(monkeypatch, capsys, listed, "ls", "d")[1]


def test_ls_of_a_file_shows_the_file(monkeypatch, capsys, listed):
    status, out, err = run_main(monkeypatch, capsys, listed, "ls", "d/b.md")
    assert (status, out.strip()) == (0, "d/b.md"), err


def test_ls_with_a_remote_glob_and_several_paths(monkeypatch, capsys, listed):
    status, out, err = run_main(monkeypatch, capsys, listed, "ls", "d/*.md", "d/sub")
    assert status == 0, err
    assert "d/b.md" in out and "c.md" in out and "a.bin" not in out


def test_ls_R_lists_every_folder_below(monkeypatch, capsys, listed):
    status, out, err = run_main(monkeypatch, capsys, listed, "ls", "-R", "d")
    assert status == 0, err
    assert "/d/sub:" in out and "c.md" in out


# ------------------------------------------------------------ bugs 4, 5, 6


def test_quiet_put_and_put_r_print_nothing(monkeypatch, capsys, user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"a", "b": b"b"})
    assert run_main(monkeypatch, capsys, user, "put", "-q", str(src / "a"))[1:] == ("", "")
    assert run_main(monkeypatch, capsys, user, "put", "-r", "-q", str(src), "q")[1:] == ("", "")


def test_stdout_closed_early_exits_quietly(user, tmp_path):
    with user.client() as c:
        for i in range(30):
            c.mkdir(f"d{i}")
    read_end, write_end = os.pipe()
    os.close(read_end)                          # like head(1) after its first line
    try:
        run = subprocess.run([sys.executable, "-m", "client.cli", "ls"], env=user.env(),
                             cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert (run.returncode, run.stderr) == (141, b"")


def test_mput_json_with_failures_is_one_document(monkeypatch, capsys, user, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"g")
    status, out, _ = run_main(monkeypatch, capsys, user, "--json", "mput", str(good),
                              str(tmp_path / "missing"))
    assert status == 5
    document = json.loads(out)
    assert len(document["files"]) == 1 and document["failed"] == 1
    assert document["error"]["code"] == "SOME_FAILED"


# ------------------------------------------------------------ bug 7: the shell


def test_shell_survives_the_idle_timeout_without_losing_a_command(server_factory, capsys):
    from client.commands import App
    from client.output import Output
    from client.shell import Shell

    d = server_factory(idle_timeout=0.5)
    u = new_user(d)
    c = u.client()
    shell = Shell(App(c, Output()))
    assert shell.execute("mkdir here") and shell.execute("cd here")
    capsys.readouterr()
    wait_for(lambda: c._conn.pending())         # the daemon said goodbye while we idled
    assert shell.execute("pwd")
    out, err = capsys.readouterr()
    assert (out.strip(), err) == ("/here", "")
    c.close()


def test_shell_after_ctrl_c_reconnects_without_alarm(fake, capsys, monkeypatch):
    from client import commands
    from client.output import Output
    from client.shell import Shell

    c = Client(fake.host, fake.port, timeout=5)
    c.connect()
    c.login("alice", "secret", want_token=True)
    shell = Shell(commands.App(c, Output()))
    fake.put_file("/f", b"x" * 100)

    def interrupted(*_args):
        c._require().close()                    # what Ctrl-C mid-transfer leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.App, "get_file", interrupted)
    shell.execute("get f")
    capsys.readouterr()
    assert shell.execute("pwd")
    out, err = capsys.readouterr()
    assert out.strip() == "/" and "lost" not in err and err == ""
    c.close()


def test_shell_lls_and_bang(fake, capsys, tmp_path, monkeypatch):
    from client.commands import App
    from client.output import Output
    from client.shell import Shell

    c = Client(fake.host, fake.port, timeout=5)
    c.connect()
    c.login("alice", "secret")
    shell = Shell(App(c, Output()))
    (tmp_path / "local.txt").write_bytes(b"l")
    monkeypatch.chdir(tmp_path)
    assert shell.execute("lls") and "local.txt" in capsys.readouterr().out
    assert shell.execute(f"!{sys.executable} -c \"open('made', 'w').close()\"")
    assert (tmp_path / "made").exists()
    c.close()


def test_shell_put_expands_local_globs(fake, capsys, tmp_path, monkeypatch):
    from client.commands import App
    from client.output import Output
    from client.shell import Shell

    c = Client(fake.host, fake.port, timeout=5)
    c.connect()
    c.login("alice", "secret")
    shell = Shell(App(c, Output()))
    tree(tmp_path, {"a.txt": b"a", "b.txt": b"b", "c.bin": b"c"})
    monkeypatch.chdir(tmp_path)
    assert shell.execute("put *.txt") and shell.execute("mput *.bin")
    _, err = capsys.readouterr()
    assert err == "" and sorted(fake.files) == ["/a.txt", "/b.txt", "/c.bin"]
    c.close()


# ------------------------------------------------------------ bug 8: messages


def test_mput_to_a_missing_folder_names_the_folder(monkeypatch, capsys, user, tmp_path):
    (tmp_path / "f1.txt").write_bytes(b"1")
    status, _, err = run_main(monkeypatch, capsys, user, "mput", "--to", "nodir",
                              str(tmp_path / "f1.txt"))
    assert status == 5 and "nodir" in err and "f1.txt" not in err


def test_get_of_a_folder_hints_at_r(monkeypatch, capsys, user):
    with user.client() as c:
        c.mkdir("folder")
    status, _, err = run_main(monkeypatch, capsys, user, "get", "folder")
    assert status == 8 and "get -r" in err


def test_get_into_a_missing_local_folder_names_it_not_the_part(monkeypatch, capsys, user,
                                                               tmp_path):
    with user.client() as c:
        (tmp_path / "s").write_bytes(b"s")
        c.put(tmp_path / "s", "s")
    status, _, err = run_main(monkeypatch, capsys, user, "get", "s",
                              str(tmp_path / "nope" / "s"))
    assert status == 5 and ".part" not in err and "nope" in err


def test_mkdir_and_rmdir_errors_name_the_path(monkeypatch, capsys, user):
    assert run_main(monkeypatch, capsys, user, "mkdir", "x")[0] == 0
    _, _, err = run_main(monkeypatch, capsys, user, "mkdir", "x")
    assert ": x: " in err
    _, _, err = run_main(monkeypatch, capsys, user, "rmdir", "y")
    assert ": y: " in err


def test_a_server_dying_mid_frame_is_a_lost_connection_not_a_protocol_violation(fake,
                                                                               tmp_path):
    fake.put_file("/f", os.urandom(50_000))
    fake.drop_get_after = 20_000
    c = Client(fake.host, fake.port, timeout=5)
    c.connect()
    c.login("alice", "secret")
    with pytest.raises(Exception) as info:
        c.get("f", str(tmp_path / "f"))
    assert info.value.code == "CONNECTION_LOST"
    c.close()


def test_quota_errors_give_the_figures():
    exc = QuotaError("QUOTA_EXCEEDED", "not enough quota for this upload",
                     {"needed": 5 << 20, "free": 1 << 20})
    assert describe(exc).message.endswith("(needs 5.0 MiB, 1.0 MiB free)")


# ------------------------------------------------------------ globs and several paths


def test_get_with_a_remote_glob(monkeypatch, capsys, listed, tmp_path):
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    status, _, err = run_main(monkeypatch, capsys, listed, "get", "d/*.md", str(out_dir))
    assert status == 0, err
    assert sorted(os.listdir(out_dir)) == ["b.md"]


def test_mget_downloads_every_match(monkeypatch, capsys, listed, tmp_path):
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    status, _, err = run_main(monkeypatch, capsys, listed, "mget", "d/*.md", "d/a.bin",
                              "--to", str(out_dir))
    assert status == 0, err
    assert sorted(os.listdir(out_dir)) == ["a.bin", "b.md"]


def test_rm_several_paths_globs_r_and_f(monkeypatch, capsys, listed):
    assert run_main(monkeypatch, capsys, listed, "rm", "d/*.md", "d/a.bin")[0] == 0
    status, _, err = run_main(monkeypatch, capsys, listed, "rm", "d/missing")
    assert status == 5
    assert run_main(monkeypatch, capsys, listed, "rm", "-f", "d/missing")[0] == 0
    assert run_main(monkeypatch, capsys, listed, "rm", "-r", "d")[0] == 0
    with listed.client() as c:
        assert "d" not in [e.name for e in c.ls().entries]


def test_stat_with_a_glob(monkeypatch, capsys, listed):
    status, out, err = run_main(monkeypatch, capsys, listed, "--json", "stat", "d/*.md")
    assert status == 0, err
    assert json.loads(out)["path"] == "/d/b.md"


def test_get_no_clobber_keeps_an_existing_local_file(monkeypatch, capsys, listed, tmp_path):
    mine = tmp_path / "b.md"
    mine.write_bytes(b"mine")
    status, _, err = run_main(monkeypatch, capsys, listed, "get", "--no-clobber", "d/b.md",
                              str(mine))
    assert status == 8 and mine.read_bytes() == b"mine"


# ------------------------------------------------------------ where and who


def test_user_at_host_port_on_the_command_line(monkeypatch, capsys, user):
    monkeypatch.delenv("FTPC_HOST", raising=False)
    for key, value in user.env().items():
        if key.startswith("FTPC_") and key not in ("FTPC_HOST", "FTPC_PORT", "FTPC_USER"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("FTPC_PORT", raising=False)
    monkeypatch.delenv("FTPC_USER", raising=False)
    target = f"{user.name}@{user.daemon.host}:{user.daemon.port}"
    assert main(["--host", target, "whoami"]) == 0
    assert capsys.readouterr().out.strip() == user.name


def test_a_password_in_the_target_is_refused(capsys):
    assert main(["--host", "alice:secret@localhost", "ls"]) == 2
    assert "never goes on the command line" in capsys.readouterr().err


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / ".config" / "ftpc" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_named_remote_from_the_config_file(monkeypatch, capsys, user, private_home):
    write_config(private_home, f'[remote.work]\nhost = "{user.daemon.host}"\n'
                               f'port = {user.daemon.port}\nuser = "{user.name}"\n')
    monkeypatch.setenv("FTPC_PASSWORD", user.password)
    for key in ("FTPC_HOST", "FTPC_PORT", "FTPC_USER"):
        monkeypatch.delenv(key, raising=False)
    assert main(["--host", "work", "whoami"]) == 0
    assert capsys.readouterr().out.strip() == user.name


def test_a_config_file_readable_by_others_is_refused(capsys, private_home):
    write_config(private_home, 'default = "x"\n', mode=0o644)
    assert main(["ls"]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_netrc_supplies_the_password(monkeypatch, capsys, user, private_home):
    netrc = private_home / ".netrc"
    netrc.write_text(f"machine {user.daemon.host} login {user.name} "
                     f'password "{user.password}"\n')
    netrc.chmod(0o600)
    for key, value in user.env().items():
        if key.startswith("FTPC_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("FTPC_PASSWORD")
    monkeypatch.setattr("getpass.getpass", lambda *_a: pytest.fail("asked for a password"))
    assert main(["whoami"]) == 0
    assert capsys.readouterr().out.strip() == user.name


def test_a_second_command_uses_the_cached_token_and_logout_forgets_it(
        monkeypatch, capsys, user, private_home):
    for key, value in user.env().items():
        if key.startswith("FTPC_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("FTPC_PASSWORD")
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda *_a: asked.append("x") or user.password)
    assert main(["whoami"]) == 0 and main(["pwd"]) == 0
    assert asked == ["x"]
    cache = private_home / ".cache" / "ftpc" / "sessions.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert main(["logout"]) == 0 and main(["pwd"]) == 0
    assert asked == ["x", "x"]


# ------------------------------------------------------------ help and version


def test_version_on_both_tools(capsys):
    from ftpd.cli import main as ftpd_main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ftpc ")
    with pytest.raises(SystemExit) as info:
        ftpd_main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("ftpd ")


def test_every_subcommand_has_a_description_in_help():
    from client.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())
    assert all(p.description for p in sub.choices.values())


def test_help_documents_every_exit_status(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for status in ("0", "1", "2", "3", "4", "5", "6", "7", "8", "130", "141"):
        assert f"\n  {status:<4}" in out, status


def test_mput_r_uploads_folders_and_takes_a_rate_limit(monkeypatch, capsys, user, tmp_path):
    src = tree(tmp_path / "t", {"a": b"a", "sub/b": b"bb"})
    (tmp_path / "loose").write_bytes(b"loose")
    status, out, err = run_main(monkeypatch, capsys, user, "--json", "mput", "-r",
                                "--limit-rate", "10M", str(src), str(tmp_path / "loose"))
    assert status == 0, err
    assert sorted(f["path"] for f in json.loads(out)["files"]) == ["/loose", "/t/a", "/t/sub/b"]


def test_mput_of_a_folder_without_r_says_to_use_it(monkeypatch, capsys, user, tmp_path):
    (tmp_path / "d").mkdir()
    status, _, err = run_main(monkeypatch, capsys, user, "mput", str(tmp_path / "d"))
    assert status == 8 and "mput -r" in err


def test_where_to_connect_follows_flag_target_env_order(monkeypatch):
    from client.remotes import parse_target, resolve

    assert parse_target("bob@files.example:2200") == ("bob", "files.example", 2200)
    assert parse_target("[::1]:99") == (None, "::1", 99)
    monkeypatch.setenv("FTPC_PORT", "3000")
    monkeypatch.setenv("FTPC_USER", "envuser")
    monkeypatch.delenv("FTPC_HOST", raising=False)
    config = {"remote": {"w": {"host": "w.example", "user": "wuser"}}}

    def where(*args):
        r = resolve(*args, config)
        return r.host, r.port, r.user

    assert where("w", None, None) == ("w.example", 3000, "wuser")
    assert where("bob@h:2200", None, None) == ("h", 2200, "bob")
    assert where("bob@h:2200", 4000, "carol") == ("h", 4000, "carol")
    assert resolve(None, None, None, {"default": "w", **config}).name == "w"


def test_shell_cd_to_a_missing_folder_names_it(user, capsys):
    from client.commands import App
    from client.output import Output
    from client.shell import Shell

    with user.client() as c:
        assert Shell(App(c, Output())).execute("cd nonexist")
    assert "nonexist" in capsys.readouterr().err


def test_the_system_keyring_supplies_the_password(monkeypatch, capsys, user):
    import types

    entry = f"{user.name}@{user.daemon.host}:{user.daemon.port}"
    fake_keyring = types.SimpleNamespace(
        get_password=lambda service, key: user.password if (service, key) == ("ftpc", entry)
        else None)
    monkeypatch.setitem(sys.modules, "keyring", fake_keyring)
    for key, value in user.env().items():
        if key.startswith("FTPC_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("FTPC_PASSWORD")
    monkeypatch.setattr("getpass.getpass", lambda *_a: pytest.fail("asked for a password"))
    assert main(["whoami"]) == 0
    assert capsys.readouterr().out.strip() == user.name


def test_put_r_overwrite_of_an_identical_tree_resends_nothing(user, tmp_path):
    src = tree(tmp_path / "t", {"a": os.urandom(1000), "b": os.urandom(2000)})
    assert ftpc(user, "put", "-r", str(src)).returncode == 0
    again = ftpc(user, "--json", "put", "-r", "--overwrite", str(src))
    assert again.returncode == 0 and json.loads(again.stdout)["bytes_sent"] == 0
