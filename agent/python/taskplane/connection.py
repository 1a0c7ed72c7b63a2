"""Where and how to reach the control plane: server URLs, a token and TLS.

The same settings, and the same environment variables, as the Rust agent,
client and CLI: ``TASKPLANE_SERVER`` (comma-separated URLs),
``TASKPLANE_TOKEN``, ``TASKPLANE_TLS_CA``, ``TASKPLANE_TLS_CERT`` and
``TASKPLANE_TLS_KEY``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union
from urllib.parse import urlsplit

import grpc
import grpc.aio

from .errors import ConfigError

#: The server used when none is given.
DEFAULT_SERVER = "http://127.0.0.1:50051"

#: The largest message accepted from the server (an assignment can be large).
MAX_RECEIVE_BYTES = 64 * 1024 * 1024


def split_servers(servers: Union[str, Iterable[str], None]) -> list[str]:
    """Server URLs from one URL, a comma-separated list, or an iterable of either."""
    if servers is None:
        return []
    if isinstance(servers, str):
        servers = [servers]
    return [url.strip() for item in servers for url in item.split(",") if url.strip()]


@dataclass
class Connection:
    """Server URLs (tried in order, moving on when one fails), a bearer token
    and TLS files."""

    servers: Sequence[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    token: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None

    def __post_init__(self) -> None:
        self.servers = split_servers(self.servers)
        if not self.servers:
            raise ConfigError("no server URL: give one, e.g. http://127.0.0.1:50051")
        for url in self.servers:
            _target(url)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "a client certificate needs its key and the key its certificate: "
                "give both tls_cert and tls_key (TASKPLANE_TLS_CERT, TASKPLANE_TLS_KEY)"
            )
        if self.token is not None and any(c in self.token for c in "\r\n"):
            raise ConfigError("the token contains a line break: a header cannot carry it")

    @classmethod
    def from_env(cls, servers: Union[str, Iterable[str], None] = None) -> "Connection":
        """Settings from the environment; ``servers`` overrides ``TASKPLANE_SERVER``."""
        urls = split_servers(servers) or split_servers(os.environ.get("TASKPLANE_SERVER"))
        return cls(
            servers=urls or [DEFAULT_SERVER],
            token=os.environ.get("TASKPLANE_TOKEN") or None,
            tls_ca=os.environ.get("TASKPLANE_TLS_CA") or None,
            tls_cert=os.environ.get("TASKPLANE_TLS_CERT") or None,
            tls_key=os.environ.get("TASKPLANE_TLS_KEY") or None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata carrying the token, if any."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def _credentials(self) -> grpc.ChannelCredentials:
        def read(path: Optional[str]) -> Optional[bytes]:
            if path is None:
                return None
            try:
                with open(path, "rb") as file:
                    return file.read()
            except OSError as error:
                raise ConfigError(f"cannot read TLS file {path}: {error}") from error

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca),
            private_key=read(self.tls_key),
            certificate_chain=read(self.tls_cert),
        )

    def channel(self, url: str) -> grpc.Channel:
        """A blocking channel to ``url``."""
        target, secure = _target(url)
        if secure:
            return grpc.secure_channel(target, self._credentials(), options=_OPTIONS)
        return grpc.insecure_channel(target, options=_OPTIONS)

    def aio_channel(self, url: str) -> grpc.aio.Channel:
        """An asyncio channel to ``url``."""
        target, secure = _target(url)
        if secure:
            return grpc.aio.secure_channel(target, self._credentials(), options=_OPTIONS)
        return grpc.aio.insecure_channel(target, options=_OPTIONS)


_OPTIONS = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]


def _target(url: str) -> tuple[str, bool]:
    """The ``host:port`` of a server URL, and whether it uses TLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(
            f"server address '{url}' is not a valid URL: use e.g. http://127.0.0.1:50051 "
            "(several, comma-separated)"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise ConfigError(f"server address '{url}' has a bad port: {error}") from error
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{host}:{port}", parts.scheme == "https"
