"""Credentials and TLS of a paho client, from a `broker:` section (the gateway's or an edge box's)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from gridgate.config import TLSConfig


def apply_credentials(client: mqtt.Client, username: str | None, secret: str | None, tls: TLSConfig) -> None:
    if username:
        client.username_pw_set(username, secret)
    if tls.enabled:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
