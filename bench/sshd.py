"""A throwaway OpenSSH server for the ``sftp``/``scp`` baselines.

``OpenSsh(folder)`` writes its own host key, client key, ``authorized_keys``,
``known_hosts`` and ``sshd_config`` into ``folder``, starts ``sshd -D -e`` on a
free loopback port (127.0.0.1 only, public-key login for the current user,
nothing else), and stops it by its PID on exit.  Nothing outside ``folder`` is
read or changed, except that ``sshd`` is installed with ``apt-get`` when it is
missing and we are root (and ``/run/sshd``, the privilege-separation folder
sshd insists on, is created when missing).

Where none of that can happen, ``SshUnavailable`` says why and the scenario
skips its OpenSSH contestants with that message.  The ciphers are OpenSSH's
defaults (the point of the baseline); ``scp`` is OpenSSH 9's, which speaks
the SFTP protocol unless given ``-O``.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .common import REGISTRY

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
SFTP_SERVER_CANDIDATES = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                          "/usr/libexec/sftp-server")
_LISTENING = re.compile(r"Server listening on 127\.0\.0\.1 port (\d+)")


class SshUnavailable(RuntimeError):
    """OpenSSH cannot run here; the message says why."""


def find_sshd(install: bool = True) -> str:
    """The sshd binary; installs ``openssh-server`` with apt-get if allowed."""
    for path in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    if not install:
        raise SshUnavailable("sshd is not installed")
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise SshUnavailable("sshd is not installed and cannot be (needs apt-get as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run([apt, "install", "-y", "--no-install-recommends", "openssh-server"],
                          capture_output=True, text=True, timeout=600, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SshUnavailable(f"apt-get install openssh-server failed: {proc.stderr[-500:]}")
    return find_sshd(install=False)


def _tools() -> dict[str, str]:
    tools = {name: shutil.which(name) for name in ("ssh-keygen", "sftp", "scp")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise SshUnavailable(f"OpenSSH client tools missing: {', '.join(missing)}")
    return {name: str(path) for name, path in tools.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenSsh:
    """``with OpenSsh(folder) as ssh: ssh.sftp_put(local, remote)`` ..."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = getpass.getuser()
        self.log_path = folder / "sshd.log"

    # ------------------------------------------------------------ set-up

    def _keys(self, keygen: str) -> None:
        for name in ("host_key", "client_key"):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"bench-{name}",
                            "-f", str(self.folder / name)],
                           check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        shutil.copy(self.folder / "client_key.pub", self.folder / "authorized_keys")

    def _config(self) -> Path:
        sftp_server = next((p for p in SFTP_SERVER_CANDIDATES if os.access(p, os.X_OK)),
                           "internal-sftp")
        f = self.folder
        config = f / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {f / 'host_key'}",
            f"PidFile {f / 'sshd.pid'}",
            f"AuthorizedKeysFile {f / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PrintMotd no",
            "LogLevel INFO",
            f"Subsystem sftp {sftp_server}",
            "",
        ]))
        return config

    def start(self) -> OpenSsh:
        sshd = find_sshd()
        tools = _tools()
        self.tools = tools
        self._keys(tools["ssh-keygen"])
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last = ""
        for _attempt in range(3):          # a free port can be taken between probe and bind
            self.port = _free_port()
            config = self._config()
            check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True,
                                   text=True, timeout=30, stdin=subprocess.DEVNULL)
            if check.returncode != 0:
                raise SshUnavailable(f"sshd -t refused the config: {check.stderr.strip()}")
            self.log_path.write_bytes(b"")
            self.proc = REGISTRY.popen([sshd, "-D", "-e", "-f", str(config)], self.log_path)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                text = self.log_path.read_text("utf-8", "replace")
                if _LISTENING.search(text):
                    host_pub = (self.folder / "host_key.pub").read_text().split()
                    (self.folder / "known_hosts").write_text(
                        f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            last = self.log_path.read_text("utf-8", "replace")[-1000:]
            self.stop()
        raise SshUnavailable(f"sshd did not start: {last.strip()}")

    def stop(self) -> None:
        if self.proc is not None:
            REGISTRY.stop(self.proc, timeout=5)
            self.proc = None

    def __enter__(self) -> OpenSsh:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ clients

    def _options(self) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.folder / "client_key"),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.folder / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR"]

    def _run(self, cmd: list[str], stdin: bytes | None = None, timeout: float = 600) -> None:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                               f"{proc.stderr.decode('utf-8', 'replace')[-500:]}")

    def sftp(self, batch: str) -> None:
        """Run an sftp batch (``put A B`` / ``get A B`` lines); fails on any error."""
        self._run([self.tools["sftp"], "-q", "-b", "-", "-P", str(self.port), *self._options(),
                   f"{self.user}@127.0.0.1"], stdin=batch.encode())

    def sftp_put(self, local: Path, remote: Path) -> None:
        self.sftp(f'put "{local}" "{remote}"\n')

    def sftp_get(self, remote: Path, local: str) -> None:
        self.sftp(f'get "{remote}" "{local}"\n')

    def scp_put(self, local: Path, remote: Path) -> None:
        self._run([self.tools["scp"], "-q", "-P", str(self.port), *self._options(), str(local),
                   f"{self.user}@127.0.0.1:{remote}"])

    def scp_get(self, remote: Path, local: str) -> None:
        self._run([self.tools["scp"], "-q", "-P", str(self.port), *self._options(),
                   f"{self.user}@127.0.0.1:{remote}", local])

