"""TLS for clients: which CA to trust and which certificate to show.

A cluster's HTTPS API usually has a certificate from the cluster's own CA
(`raftkv certs`, `raftkv dev --tls`), which no system trust store holds, and
a node started with ``--client-ca-file`` asks every client for a
certificate. One SSL context built here serves the async client (aiohttp),
the blocking Watch (http.client) and the CLI's streaming commands (urllib),
so they all trust and present the same files.
"""

from __future__ import annotations

import ssl
from os import PathLike


FilePath = str | PathLike[str]


def client_ssl_context(
    ca_file: FilePath | None = None,
    cert_file: FilePath | None = None,
    key_file: FilePath | None = None,
) -> ssl.SSLContext | None:
    """The context for https:// endpoints, or None (the system's default
    trust, which also honours ``SSL_CERT_FILE``) when no file is given.

    ``ca_file``: PEM CA certificate(s) to trust instead of the system's.
    ``cert_file`` and ``key_file``: the client certificate to show; the key
    may sit in ``cert_file`` itself. Raises ValueError naming the file when
    one cannot be used, so a typo fails before anything is sent.
    """
    if key_file is not None and cert_file is None:
        raise ValueError("a client key needs its certificate: give cert_file too")
    if ca_file is None and cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except FileNotFoundError:
        raise ValueError(f"CA file {ca_file}: no such file") from None
    except ssl.SSLError as exc:
        raise ValueError(f"CA file {ca_file} holds no PEM certificate ({exc.reason or exc})") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        except FileNotFoundError:
            raise ValueError(f"client certificate {cert_file} or key {key_file}: no such file") from None
        except ssl.SSLError as exc:
            raise ValueError(
                f"client certificate {cert_file} with key {key_file or cert_file}: {exc.reason or exc}"
            ) from None
    return context


def tls_failure_hint(error: BaseException | str) -> str:
    """What to do about a failed handshake, for messages."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "the server's certificate did not verify: trust the cluster's CA (ca_file=, raftkv --cacert PEM)"
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text.lower():
        return "the server wants a client certificate: give one (cert_file=/key_file=, raftkv --cert/--key)"
    return "check the CA it trusts (ca_file=, --cacert) and the client certificate (cert_file=, --cert)"


def is_tls_failure(error: BaseException) -> bool:
    """Whether ``error`` is a failed TLS handshake (not a refused or broken
    connection): an ssl error itself (http.client; aiohttp's subclasses), or
    one that urllib wraps in a URLError's ``reason``."""
    return isinstance(error, ssl.SSLError) or isinstance(getattr(error, "reason", None), ssl.SSLError)


def tls_error_text(error: BaseException) -> str:
    """The ssl module's words for a failed handshake, without aiohttp's or urllib's wrapping."""
    inner = getattr(error, "certificate_error", None) or getattr(error, "reason", None)
    return str(inner if isinstance(inner, ssl.SSLError) else error)


__all__ = ["client_ssl_context", "is_tls_failure", "tls_error_text", "tls_failure_hint"]
