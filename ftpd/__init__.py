"""ftpd package."""
