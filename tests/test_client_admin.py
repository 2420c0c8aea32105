"""``ftpd``'s administration commands as an operator meets them (issue 15, bug 9):
clear errors instead of tracebacks, nothing created by a typo, sizes for people."""

from __future__ import annotations

import subprocess
import sys

from tests.daemon import REPO


def ftpd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftpd.cli", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def add_user(root: str, name: str = "carol", *extra: str) -> subprocess.CompletedProcess[str]:
    return ftpd("user", "add", name, "--root", root, "--scrypt-n", "16", "--password-stdin",
                *extra, stdin="s3cret\n")


def test_serve_with_an_unknown_log_level_is_a_clear_error(tmp_path):
    run = ftpd("serve", "--root", str(tmp_path), "--port", "0", "--log-level", "LOUD")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "log_level" in run.stderr and "DEBUG" in run.stderr


def test_user_list_with_a_mistyped_root_creates_nothing(tmp_path):
    typo = tmp_path / "typo"
    run = ftpd("user", "list", "--root", str(typo))
    assert run.returncode == 2 and "no data folder" in run.stderr
    assert not typo.exists()


def test_serve_without_a_root_refuses_instead_of_using_var(tmp_path):
    run = subprocess.run([sys.executable, "-m", "ftpd.cli", "serve", "--port", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and "--root" in run.stderr
    assert not (tmp_path / "var").exists()


def test_sizes_are_printed_for_people(tmp_path):
    root = str(tmp_path / "data")
    assert "1.5 GiB" in add_user(root, "carol", "--quota", "1.5G").stdout
    listing = ftpd("user", "list", "--root", root).stdout
    assert "quota=1610612736 (1.5 GiB)" in listing


def test_a_bad_size_says_what_a_size_looks_like(tmp_path):
    run = add_user(str(tmp_path / "data"), "carol", "--quota", "5X")
    assert run.returncode == 2 and "not a size: '5X'" in run.stderr
    assert "parse_size" not in run.stderr


def test_quota_unlimited_is_accepted_and_zero_warns(tmp_path):
    root = str(tmp_path / "data")
    assert add_user(root).returncode == 0
    unlimited = ftpd("user", "quota", "carol", "unlimited", "--root", root)
    assert unlimited.returncode == 0 and "unlimited" in unlimited.stdout
    zero = ftpd("user", "quota", "carol", "0", "--root", root)
    assert zero.returncode == 0 and "warning" in zero.stderr and "can store nothing" in zero.stderr


def test_user_del_without_yes_deletes_nothing(tmp_path):
    root = str(tmp_path / "data")
    assert add_user(root).returncode == 0
    refused = ftpd("user", "del", "carol", "--root", root)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "carol" in ftpd("user", "list", "--root", root).stdout
    assert ftpd("user", "del", "carol", "--yes", "--root", root).returncode == 0
    assert "carol" not in ftpd("user", "list", "--root", root).stdout


def test_a_toml_error_names_the_file(tmp_path):
    bad = tmp_path / "ftpd.toml"
    bad.write_text("port = = 1\n")
    run = ftpd("serve", "--root", str(tmp_path), "--config", str(bad))
    assert run.returncode == 2 and str(bad) in run.stderr and "Traceback" not in run.stderr
