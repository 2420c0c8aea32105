"""ftpd: the file-transfer daemon (selectors reactor, connections, command handlers, CLI)."""

__version__ = "0.1.0"
