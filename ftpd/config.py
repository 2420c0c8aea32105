"""Every setting of the daemon, its default, and where it comes from.

Precedence: built-in defaults < TOML file (``--config``) < command-line flags.
The TOML file uses the same names as the fields below, at top level or under
a ``[ftpd]`` table; sizes may be written as "1G", "64K" or plain integers.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import parse_size

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SIZE_FIELDS = {"default_quota", "spool_limit", "max_control_frame", "max_data_frame", "high_water",
                "low_water", "recv_buffer", "writeback_bytes", "inline_max",
                "inline_window_bytes", "folder_cost"}


@dataclass
class Config:
    root: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 2121
    log_level: str = "INFO"
    allow_register: bool = False
    default_quota: int = 1 << 30

    # limits
    max_partials_per_user: int = 1000    # unfinished uploads per user (TOO_MANY_PARTIALS)
    folder_cost: int = 4096              # quota bytes each folder costs (0: folders are free)
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000
    max_uploads_per_user: int = 8
    max_connections_per_user: int = 64    # logged-in connections of one user at once
    max_control_frame: int = 64 * 1024
    max_data_frame: int = 1 << 20

    # timeouts, seconds
    login_timeout: float = 30.0
    idle_timeout: float = 300.0
    stall_timeout: float = 60.0
    shutdown_grace: float = 10.0

    # login throttling
    auth_delay_base: float = 0.5          # delay after the first failure, doubling after each
    auth_delay_max: float = 8.0
    lockout_threshold: int = 10           # failures per address, or per user name from
                                          # untrusted sources, before a lockout
    lockout_seconds: float = 300.0
    auth_failure_decay: float = 60.0      # one failure is forgiven per this many seconds
    login_trust_days: float = 30.0        # an address that logged in as a user within this
                                          # many days is exempt from that user's lockout; 0: off
    token_ttl: float = 86_400.0

    # buffers and workers
    high_water: int = 256 * 1024          # pause producers above this much queued output
    low_water: int = 64 * 1024            # resume them below this
    recv_buffer: int = 1 << 20
    #: every this many uploaded bytes a worker hashes them and fdatasyncs them, so the
    #: commit after the last byte only has the tail left to do
    writeback_bytes: int = 16 << 20
    worker_processes: int = 1             # reactor processes (nginx's name; ``--workers``):
                                          # more than 1 runs a supervisor and N workers
    workers: int = 4                      # file work: hashing, fsync, commit, listings
    auth_workers: int = 0                 # password hashing; 0 means one per CPU

    # inline (pipelined) puts of small files
    inline_max: int = 1 << 20             # largest inline put (announced in the greeting); 0: off
    inline_window_files: int = 128        # inline puts read but not answered, per connection
    inline_window_bytes: int = 8 << 20    # ... and their bytes held in memory; past either
                                          # bound the connection stops reading
    inline_batches: int = 4               # groups of them being stored at once, per connection
    inline_batch_files: int = 32          # files per group (one sync pass for all of them)
    use_sendfile: bool = True

    # TLS (docs/SECURITY.md): on by default; without tls_cert/tls_key the daemon
    # uses (and on first start makes) a self-signed pair under <root>/tls/
    tls: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    tls_min_version: str = "1.3"          # "1.2" only if asked; never older

    # storage
    scrypt_n: int = 2**14
    partial_ttl: float = 7 * 86_400.0
    cleanup_interval: float = 3_600.0
    # the object-store backend (docs/ARCHITECTURE.md, "Deployment"): both or neither;
    # credentials never go here (AWS environment / credentials file, PGPASSWORD / .pgpass)
    metadata_url: str = ""                # postgresql://...
    blob_url: str = ""                    # s3://BUCKET?endpoint=http://HOST:PORT&region=R
    metadata_timeout: float = 5.0         # seconds a request waits for PostgreSQL, then IO_ERROR
    spool_limit: int = 1 << 30            # bytes all uploads may spool locally before S3

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def validate(self) -> Config:
        if str(self.log_level).upper() not in LOG_LEVELS:
            raise ValueError(f"log_level {self.log_level!r} is not one of "
                             f"{', '.join(LOG_LEVELS)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if not 0 < self.low_water <= self.high_water:
            raise ValueError("need 0 < low_water <= high_water")
        if not 1 <= self.worker_processes <= 256:
            raise ValueError("worker_processes must be between 1 and 256 (or \"auto\")")
        if self.workers < 1 or self.auth_workers < 0:
            raise ValueError("workers must be >= 1 and auth_workers >= 0")
        for name in ("max_connections", "max_connections_per_ip", "max_uploads_per_user",
                     "max_connections_per_user", "lockout_threshold", "inline_window_files",
                     "inline_window_bytes", "inline_batches", "inline_batch_files",
                     "max_partials_per_user"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("login_timeout", "idle_timeout", "stall_timeout", "metadata_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.spool_limit < 1:
            raise ValueError("spool_limit must be >= 1 byte")
        if self.folder_cost < 0:
            raise ValueError("folder_cost must be >= 0")
        if self.auth_failure_decay < 0 or self.login_trust_days < 0:
            raise ValueError("auth_failure_decay and login_trust_days must be >= 0")
        if not 0 <= self.inline_max <= 64 << 20:
            raise ValueError("inline_max must be between 0 and 64 MiB")
        if not 4096 <= self.max_data_frame <= 64 << 20:
            raise ValueError("max_data_frame must be between 4 KiB and 64 MiB")
        if not 1024 <= self.max_control_frame <= 1 << 20:
            raise ValueError("max_control_frame must be between 1 KiB and 1 MiB")
        if bool(self.metadata_url) != bool(self.blob_url):
            raise ValueError("metadata_url and blob_url go together (PostgreSQL plus S3)")
        if self.metadata_url and not self.metadata_url.startswith(("postgresql://",
                                                                   "postgres://")):
            raise ValueError("metadata_url must be a postgresql:// URL")
        if self.blob_url and not self.blob_url.startswith("s3://"):
            raise ValueError("blob_url must be an s3:// URL")
        if self.tls_min_version not in ("1.3", "1.2"):
            raise ValueError('tls_min_version must be "1.3" or "1.2"')
        return self

    def updated(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (None values are ignored), converted and validated."""
        known = {f.name: f for f in dataclasses.fields(self)}
        values = {}
        for name, value in changes.items():
            if value is None:
                continue
            if name not in known or name == "extra":
                raise ValueError(f"unknown setting {name!r}")
            values[name] = _convert(name, known[name].type, value)
        return dataclasses.replace(self, **values).validate()


def _convert(name: str, kind: Any, value: Any) -> Any:
    if name == "worker_processes" and value == "auto":
        return os.cpu_count() or 1
    if name in _SIZE_FIELDS and isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError:
            raise ValueError(f"setting {name}: not a size: {value!r} (try 64K, 1M, 1G)")
    if name == "root":
        return Path(value)
    if name == "tls_min_version" and isinstance(value, float):
        return f"{value:.1f}"             # TOML / --set may write 1.3 unquoted
    expected = {"int": int, "float": float, "bool": bool, "str": str}.get(str(kind))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is not None and type(value) is not expected:
        raise ValueError(f"setting {name} must be {expected.__name__}, not {type(value).__name__}")
    return value


def _file_settings(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file; its errors name the file."""
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}")
    return data.get("ftpd", data)


def sets_root(path: str | Path | None) -> bool:
    """Whether the config file names the data folder (``serve`` needs one somewhere)."""
    return path is not None and "root" in _file_settings(path)


def load(path: str | Path | None = None, **overrides: Any) -> Config:
    config = Config()
    if path is not None:
        data = _file_settings(path)
        try:
            config = config.updated(**data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}")
    return config.updated(**overrides)
