"""ftpd/certs.py: the self-signed pair, fingerprints, rotation and server contexts."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import stat

import pytest

from ftpd import certs


def test_first_start_creates_the_pair_under_root_tls(tmp_path):
    pair = certs.ensure_self_signed(tmp_path)
    assert pair.cert == tmp_path / "tls" / "cert.pem"
    assert pair.key == tmp_path / "tls" / "key.pem"
    assert pair.cert.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_key_file_is_mode_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        pair = certs.ensure_self_signed(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.key.parent.stat().st_mode) == 0o700


def test_key_is_never_created_wider_than_0600(tmp_path, monkeypatch):
    modes = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        if str(path).endswith(".tmp"):
            modes.append((str(path), mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    certs.ensure_self_signed(tmp_path)
    key_modes = [mode for path, mode in modes if "key.pem" in path]
    assert key_modes == [0o600]


def test_no_temporary_file_is_left_behind(tmp_path):
    certs.ensure_self_signed(tmp_path)
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["cert.pem", "key.pem"]


def test_later_starts_reuse_the_pair(tmp_path):
    first = certs.ensure_self_signed(tmp_path).fingerprint()
    assert certs.ensure_self_signed(tmp_path).fingerprint() == first


def test_the_key_is_ecdsa_p256(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    pair = certs.ensure_self_signed(tmp_path)
    key = x509.load_pem_x509_certificate(pair.cert.read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"


def test_fingerprint_is_ssh_style_unpadded_base64_of_the_der_sha256(tmp_path):
    pair = certs.ensure_self_signed(tmp_path)
    der = ssl.PEM_cert_to_DER_cert(pair.cert.read_text())
    expected = base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    fp = pair.fingerprint()
    assert fp == "SHA256:" + expected
    assert len(fp) == len("SHA256:") + 43 and "=" not in fp


def test_rotate_makes_a_new_fingerprint(tmp_path):
    first = certs.ensure_self_signed(tmp_path).fingerprint()
    assert certs.rotate(tmp_path).fingerprint() != first


def test_resolve_prefers_the_given_files(tmp_path):
    given = certs.CertPair(tmp_path / "a.pem", tmp_path / "b.pem")
    assert certs.resolve(tmp_path, given.cert, given.key) == given
    assert not (tmp_path / "tls").exists()


def test_resolve_wants_both_files_or_neither(tmp_path):
    with pytest.raises(certs.CertError):
        certs.resolve(tmp_path, tmp_path / "a.pem", None)


def test_server_context_is_tls13_only_by_default(tmp_path):
    ctx = certs.server_context(certs.ensure_self_signed(tmp_path))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.num_tickets >= 1


def test_server_context_allows_tls12_when_asked(tmp_path):
    ctx = certs.server_context(certs.ensure_self_signed(tmp_path), "1.2")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("version", ["1.1", "1.0", "1", ""])
def test_server_context_never_allows_older_than_tls12(tmp_path, version):
    with pytest.raises(certs.CertError):
        certs.server_context(certs.ensure_self_signed(tmp_path), version)


def test_missing_files_are_a_cert_error(tmp_path):
    with pytest.raises(certs.CertError):
        certs.server_context(certs.CertPair(tmp_path / "no.pem", tmp_path / "no.key"))


def test_reload_picks_up_a_rotated_certificate_in_a_new_context(tmp_path):
    creds = certs.ServerCredentials(certs.ensure_self_signed(tmp_path))
    old_context, old_fp = creds.context, creds.fingerprint
    certs.rotate(tmp_path)
    assert creds.reload()
    assert creds.context is not old_context
    assert creds.fingerprint != old_fp


def test_failed_reload_keeps_the_old_context(tmp_path):
    creds = certs.ServerCredentials(certs.ensure_self_signed(tmp_path))
    old_context = creds.context
    creds.pair.key.write_text("garbage")
    assert not creds.reload()
    assert creds.context is old_context


# ------------------------------------------------------------ ftpd tls / serve flags


def test_cli_fingerprint_prints_the_pinned_form(tmp_path, capsys):
    from ftpd import cli

    assert cli.main(["tls", "fingerprint", "--root", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == certs.default_pair(tmp_path).fingerprint()
    assert cli.main(["tls", "fingerprint", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == printed


def test_cli_rotate_changes_the_fingerprint(tmp_path, capsys):
    from ftpd import cli

    cli.main(["tls", "fingerprint", "--root", str(tmp_path)])
    before = capsys.readouterr().out.strip()
    assert cli.main(["tls", "rotate", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    after = certs.default_pair(tmp_path).fingerprint()
    assert after != before and f"tls fingerprint {after}" in out


def test_cli_fingerprint_of_configured_files(tmp_path, capsys):
    from ftpd import cli

    pair = certs.rotate(tmp_path / "elsewhere")
    toml = tmp_path / "ftpd.toml"
    toml.write_text(f'tls_cert = "{pair.cert}"\ntls_key = "{pair.key}"\n')
    assert cli.main(["tls", "fingerprint", "--root", str(tmp_path), "--config", str(toml)]) == 0
    assert capsys.readouterr().out.strip() == pair.fingerprint()
    assert not (tmp_path / "tls").exists()


def test_serve_flags_become_settings(tmp_path):
    from ftpd import cli, config

    args = cli.build_parser().parse_args(
        ["serve", "--root", str(tmp_path), "--tls-cert", "c.pem", "--tls-key", "k.pem"])
    settings = {k: v for k, v in cli._tls_serve_settings(args).items() if v is not None}
    cfg = config.load(**settings)
    assert (cfg.tls, cfg.tls_cert, cfg.tls_key) == (True, "c.pem", "k.pem")


def test_plaintext_flag_turns_tls_off(tmp_path):
    from ftpd import cli, config

    args = cli.build_parser().parse_args(["serve", "--root", str(tmp_path), "--plaintext"])
    settings = {k: v for k, v in cli._tls_serve_settings(args).items() if v is not None}
    assert config.load(**settings).tls is False


def test_tls_is_on_by_default_with_tls13():
    from ftpd import config

    cfg = config.load()
    assert cfg.tls is True and cfg.tls_min_version == "1.3"


@pytest.mark.parametrize("value", ["1.1", "1.0", 1.1])
def test_tls_min_version_older_than_12_is_refused(value):
    from ftpd import config

    with pytest.raises(ValueError):
        config.load(tls_min_version=value)


def test_tls_min_version_accepts_an_unquoted_12():
    from ftpd import config

    assert config.load(tls_min_version=1.2).tls_min_version == "1.2"


def test_credentials_for_plain_text_is_none(tmp_path):
    assert certs.credentials_for(tmp_path, tls=False) is None
    assert not (tmp_path / "tls").exists()


def test_credentials_for_tls_logs_the_fingerprint(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ftpd.tls")
    creds = certs.credentials_for(tmp_path, tls=True)
    assert f"tls fingerprint {creds.fingerprint}" in caplog.text
    assert creds.fingerprint == certs.default_pair(tmp_path).fingerprint()


@pytest.mark.parametrize("host,warns", [("127.0.0.1", False), ("::1", False),
                                        ("localhost", False), ("0.0.0.0", True),
                                        ("192.0.2.1", True), ("example.org", True)])
def test_plaintext_warning_only_beyond_loopback(host, warns):
    assert (certs.plaintext_warning(host) is not None) == warns
