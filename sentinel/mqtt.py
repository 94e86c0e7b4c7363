"""What every Sentinel client of the MQTT broker shares: connection settings, TLS, and
which failed connections are fatal.

Two clients talk to the broker, the ingest source (``sentinel.ingest.mqtt``) and the alert
publisher (``sentinel.publish.publisher``); neither is upstream of the other, so what they
share lives here rather than in either (issue #20).
"""

from __future__ import annotations

import logging
import ssl
import sys
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sentinel.errors import ConfigError

if TYPE_CHECKING:  # the MQTT client process reads these without the config's imports
    from sentinel.config import MqttConfig

__all__ = [
    "FATAL_REFUSALS",
    "apply_connection_settings",
    "connect_error",
    "connect_session",
    "fatal_connect_error",
    "session_client",
]

# CONNACK refusals that retrying cannot fix, with what to tell the operator: the client
# stops and says so instead of looping forever.
FATAL_REFUSALS = {
    "Bad user name or password": "the broker rejected the user name or password",
    "Not authorized": "the broker refused us: not authorized",
    "Client identifier not valid": "the broker rejected the client id",
    "Bad authentication method": "the broker does not accept this authentication method",
    "Unsupported protocol version": "the broker does not speak this MQTT version "
    '(set mqtt.protocol = "3.1.1")',
    "Banned": "the broker has banned this client",
}

# OpenSSL's verify codes for a certificate issued to another name (x509_vfy.h).
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class _QuietAfterDisconnect(logging.Filter):
    """paho 2.2 runs its loop once more after a requested disconnect and logs "Client is not
    connected" at ERROR; our own ``mqtt_disconnected`` event reports the real state."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(
            "Client is not connected"
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_PAHO_LOG = logging.getLogger("paho.mqtt.client")
_PAHO_LOG.addFilter(_QuietAfterDisconnect())


def apply_connection_settings(client: mqtt.Client, cfg: MqttConfig, password: str | None) -> None:
    """What every Sentinel client of the broker shares: paho's log routed to structlog,
    reconnect back-off, credentials and TLS (the ingest source and the alert publisher)."""
    client.enable_logger(_PAHO_LOG)
    client.reconnect_delay_set(
        min_delay=max(1, round(cfg.reconnect_min_delay)),
        max_delay=max(1, round(cfg.reconnect_max_delay)),
    )
    if cfg.username is not None:
        client.username_pw_set(cfg.username, password)
    if cfg.tls.enabled:
        tls = cfg.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            files = ", ".join(
                f"{key} = {path}"
                for key, path in (
                    ("ca_file", tls.ca_file),
                    ("cert_file", tls.cert_file),
                    ("key_file", tls.key_file),
                )
                if path is not None
            )
            raise ConfigError(
                f"mqtt.tls: cannot load the certificates ({files or 'system CAs'}): {err}"
            ) from err
        client.tls_insecure_set(tls.insecure)


def fatal_connect_error(cfg: MqttConfig, err: BaseException | None) -> str | None:
    """What to tell the operator when a failed connection attempt cannot succeed by
    retrying; None when it may (a broker down or unreachable).

    A broker certificate that does not verify, against ``mqtt.tls.ca_file`` or against
    ``mqtt.host``, stays so until someone changes a file: like bad credentials, it stops
    the client instead of hiding behind ``mqtt_connect_failed`` forever (issue #19).
    """
    if not isinstance(err, ssl.SSLCertVerificationError):
        return None
    ca = f"mqtt.tls.ca_file = {cfg.tls.ca_file}" if cfg.tls.ca_file else "the system's CAs"
    if err.verify_code in _NAME_MISMATCH:
        fix = f"set mqtt.host to a name the certificate is issued for ({ca})"
    else:
        fix = f"mqtt.tls.ca_file must hold the CA that signed the broker's certificate ({ca})"
    why = err.verify_message or str(err)
    return f"TLS: the certificate of {cfg.host}:{cfg.port} does not verify: {why}; {fix}"


def connect_error() -> BaseException | None:
    """The error of the connection attempt that failed, inside paho's ``on_connect_fail``.

    paho 2.x calls ``on_connect_fail`` without it, from inside its ``except OSError``
    around the attempt (``Client.loop_forever``), so it is the exception being handled.
    """
    return sys.exc_info()[1]


def session_client(cfg: MqttConfig, password: str | None) -> mqtt.Client:
    """The ingest's paho client: a persistent session (``clean_session=False`` on 3.1.1;
    on MQTT 5 ``clean_start=False`` at connect, see ``connect_session``) with manual acks,
    so that a message is acknowledged only once what it carried is committed."""
    v5 = cfg.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        clean_session=None if v5 else False,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    apply_connection_settings(client, cfg, password)
    return client


def connect_session(client: mqtt.Client, cfg: MqttConfig, receive_maximum: int) -> None:
    """Start connecting ``session_client``'s client (paho reconnects on its own): on MQTT 5
    with a session expiry and our Receive Maximum, the ingest queue's size."""
    v5 = cfg.protocol == "5"
    properties: Properties | None = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = cfg.session_expiry
        properties.ReceiveMaximum = receive_maximum
    client.connect_async(
        cfg.host,
        cfg.port,
        keepalive=cfg.keepalive,
        clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
    )
