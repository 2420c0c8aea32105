"""Every scenario, in the order a run takes them (a module of its own so that
the scenario modules can build on ``bench.scenarios`` without a cycle)."""

from __future__ import annotations

from .latency import LatencyUnderLoad
from .objstore import MetadataOps, S3Download, S3Upload
from .scenarios import (
    BulkDownload,
    BulkUpload,
    ConcurrentUploads,
    IdleConnections,
    ManyIdleConnections,
    PasswordLogins,
    Scenario,
    SlowReader,
    SmallFiles,
    TokenLogins,
    VerifiedRoundTrip,
)
from .secure import TlsDownload, TlsUpload, WorkersDownload
from .tls_logins import TlsIdle, TlsPasswordLogins, TlsReconnect, WorkersReconnect

SCENARIOS: list[Scenario] = [
    BulkUpload(), BulkDownload(), VerifiedRoundTrip(), SmallFiles(), ConcurrentUploads(),
    TokenLogins(), PasswordLogins(), LatencyUnderLoad(), IdleConnections(),
    ManyIdleConnections(), SlowReader(), TlsUpload(), TlsDownload(), WorkersDownload(),
    TlsReconnect(), WorkersReconnect(), TlsPasswordLogins(), TlsIdle(),
    S3Upload(), S3Download(), MetadataOps(),
]
BY_NAME = {s.name: s for s in SCENARIOS}

#: The chart families (``bench.charts``): one PNG each.
FAMILIES: dict[str, list[str]] = {
    "throughput": ["upload", "download", "verified", "tls-upload", "tls-download", "workers"],
    "small-files-and-logins": ["small-files", "concurrent", "token-login", "password-login",
                               "tls-reconnect", "workers-reconnect", "tls-password-login"],
    "latency": ["latency"],
    "memory": ["idle", "idle-10k", "slow-reader", "tls-idle"],
    "object-store": ["s3-upload", "s3-download", "metadata"],
}
