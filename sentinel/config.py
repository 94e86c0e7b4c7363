"""The one configuration model: a TOML file validated by pydantic.

Secrets never live in the TOML. The MQTT password comes from ``$CREDENTIALS_DIRECTORY/
mqtt_password`` (systemd ``LoadCredential=``) or the ``SENTINEL_MQTT_PASSWORD`` environment
variable; the database password likewise from ``db_password`` / ``SENTINEL_DB_PASSWORD``;
the REST API's bearer token from ``api_token`` / ``SENTINEL_API_TOKEN``; the NATS password
from ``nats_password`` / ``SENTINEL_NATS_PASSWORD`` and a NATS ``.creds`` file (JWT and
NKey) from ``$CREDENTIALS_DIRECTORY/nats_creds``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from sentinel.errors import ConfigError

__all__ = [
    "AlertsConfig",
    "ClusterConfig",
    "ColdStartConfig",
    "CommandLevelsConfig",
    "ConstantsConfig",
    "DatabaseConfig",
    "FeatureSpec",
    "HealthConfig",
    "HistoryConfig",
    "IngestConfig",
    "LevelsConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "NatsConfig",
    "NoiseConfig",
    "PublishConfig",
    "RegistryConfig",
    "RelationsConfig",
    "RetrainConfig",
    "SentinelConfig",
    "ShiftsConfig",
    "SpikesConfig",
    "StreamConfig",
    "StuckConfig",
    "ThresholdConfig",
    "TlsConfig",
    "WindowConfig",
    "config_hash",
    "config_to_toml",
    "format_validation_error",
    "load_config",
    "read_config_data",
    "read_secret",
    "validate_config",
]

MQTT_PASSWORD_CREDENTIAL = "mqtt_password"
MQTT_PASSWORD_ENV = "SENTINEL_MQTT_PASSWORD"
DB_PASSWORD_CREDENTIAL = "db_password"
DB_PASSWORD_ENV = "SENTINEL_DB_PASSWORD"
# The REST API's write actions (ack, resolve, activate, rollback) need this bearer token;
# without one they are refused (sentinel/api/auth.py).
API_TOKEN_CREDENTIAL = "api_token"
API_TOKEN_ENV = "SENTINEL_API_TOKEN"
NATS_PASSWORD_CREDENTIAL = "nats_password"
NATS_PASSWORD_ENV = "SENTINEL_NATS_PASSWORD"
NATS_CREDS_CREDENTIAL = "nats_creds"

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(credential: str, env: str) -> str | None:
    """A secret from systemd's credential directory, else from the environment, else None."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / credential
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\r\n")
    value = os.environ.get(env)
    return value if value else None


class TlsConfig(Section):
    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the broker; system CAs when unset."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Client private key (PEM).")
    insecure: bool = Field(
        default=False, description="Skip broker hostname verification (testing only)."
    )

    @model_validator(mode="after")
    def _cert_needs_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Section):
    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    client_id: str = Field(
        default_factory=lambda: f"sentinel-{socket.gethostname()}"[:64],
        min_length=1,
        max_length=64,
        description="Stable client id: the broker keeps our persistent session under it.",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    username: str | None = Field(
        default=None,
        description="User name. The password comes from the mqtt_password credential or "
        "SENTINEL_MQTT_PASSWORD, never from this file.",
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="Keep-alive, seconds.")
    session_expiry: int = Field(
        default=86_400,
        ge=0,
        le=4_294_967_295,
        description="MQTT 5 session expiry, seconds: how long the broker holds messages for "
        "us while we are away.",
    )
    qos: Literal[0, 1] = Field(
        default=1, description="Subscription QoS. 1 (default) means nothing is lost on restart."
    )
    reconnect_min_delay: float = Field(default=1.0, gt=0, le=60, description="Seconds.")
    reconnect_max_delay: float = Field(default=60.0, gt=0, le=3600, description="Seconds.")
    client_process: bool = Field(
        default=True,
        description="Run the MQTT client (paho's network loop) in a process of its own, "
        "which hands the daemon raw messages in batches and sends the acknowledgements it "
        "is given: receiving no longer shares the daemon's interpreter lock with judging "
        "(a backlog drains ~1.5 x faster on two cores), for a second process of ~25 MB "
        "(docs/BENCHMARKS.md, 'The MQTT client in a process of its own'). The delivery "
        "guarantee is the same. false: the client runs on a thread of the daemon (one "
        "process; for a single-core box).",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)

    @model_validator(mode="after")
    def _delays_ordered(self) -> MqttConfig:
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be >= reconnect_min_delay")
        return self

    @property
    def password(self) -> SecretStr | None:
        value = read_secret(MQTT_PASSWORD_CREDENTIAL, MQTT_PASSWORD_ENV)
        return SecretStr(value) if value is not None else None


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NatsConfig(Section):
    """The NATS JetStream source (``[ingest] source = "nats"``, docs/OPERATIONS.md)."""

    servers: Annotated[list[str], Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        description="Server URLs (nats:// or tls://); the client fails over between them.",
    )
    name: str = Field(
        default_factory=lambda: f"sentinel-{socket.gethostname()}"[:64],
        min_length=1,
        max_length=64,
        description="Connection name, shown by the server's monitoring.",
    )
    username: str | None = Field(
        default=None,
        description="User name. The password comes from the nats_password credential or "
        "SENTINEL_NATS_PASSWORD; a .creds file (JWT) from the nats_creds credential.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    stream: str = Field(
        default="SENTINEL",
        description="JetStream stream that captures the partitioned subjects.",
    )
    subject_prefix: str = Field(
        default="sentinel",
        description="First token of the partitioned subjects <prefix>.<partition>.<subject>, "
        "which the server's subject mapping writes (sentinel nats-mappings prints it).",
    )
    consumer_prefix: str = Field(
        default="sentinel",
        description="Durable consumer names are <consumer_prefix>-p<partition>-<n>, n "
        "growing each time a daemon takes the partition or reconnects.",
    )
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="P: devices are split into this many partitions by the server's "
        "subject mapping. Must equal the P in that mapping.",
    )
    consume: list[int] | None = Field(
        default=None,
        description="Partitions this daemon consumes; all of them when unset.",
    )
    create_stream: bool = Field(
        default=True,
        description="Create the stream (file storage) at start when it does not exist.",
    )
    max_age: float = Field(
        default=604_800.0,
        ge=60.0,
        le=315_360_000.0,
        description="Seconds a created stream keeps messages (its max_age): how long "
        "readings wait for a daemon that is down.",
    )
    ack_wait: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Seconds JetStream waits for an ack before it redelivers a message.",
    )
    fetch_batch: int = Field(
        default=100, ge=1, le=10_000, description="Messages asked for per pull request."
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds.")
    reconnect_wait: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between reconnect attempts."
    )

    @field_validator("stream", "subject_prefix", "consumer_prefix")
    @classmethod
    def _valid_token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-' (one subject token)")
        return value

    @field_validator("servers")
    @classmethod
    def _valid_servers(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^(nats|tls|ws|wss)://[^/\s]+$", url):
                raise ValueError(f"{url!r}: use nats://host:port (or tls://, ws://, wss://)")
        return value

    @model_validator(mode="after")
    def _consume_within_partitions(self) -> NatsConfig:
        if self.consume is not None:
            if not self.consume:
                raise ValueError("consume: leave it unset for all partitions, not empty")
            if len(set(self.consume)) != len(self.consume):
                raise ValueError("consume: a partition is listed twice")
            bad = [p for p in self.consume if not 0 <= p < self.partitions]
            if bad:
                raise ValueError(f"consume: {bad} outside 0..{self.partitions - 1}")
        return self

    @property
    def owned(self) -> tuple[int, ...]:
        """The partitions this daemon consumes, in order."""
        return tuple(sorted(self.consume)) if self.consume else tuple(range(self.partitions))

    @property
    def password(self) -> SecretStr | None:
        value = read_secret(NATS_PASSWORD_CREDENTIAL, NATS_PASSWORD_ENV)
        return SecretStr(value) if value is not None else None

    @property
    def creds_file(self) -> Path | None:
        """A NATS .creds file from systemd's credential directory, if one was given."""
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir and (path := Path(cred_dir) / NATS_CREDS_CREDENTIAL).is_file():
            return path
        return None


class ClusterConfig(Section):
    """Several daemons sharing one fleet's partitions (docs/ARCHITECTURE.md, *Scaling out*).

    Each partition is held by one daemon at a time through a PostgreSQL session advisory
    lock on the shared database; a daemon that dies loses its locks with its connection and
    the others take its partitions over. ``[nats] consume`` stays the static alternative.
    """

    enabled: bool = Field(
        default=False,
        description="Share the [nats] partitions with the other daemons on the same "
        'PostgreSQL database (needs ingest.source = "nats" and a postgresql URL).',
    )
    group: str | None = Field(
        default=None,
        description="Daemons with the same group share partitions; default: the "
        "[nats] consumer_prefix.",
    )
    member: str = Field(
        default_factory=lambda: (
            re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32] or "sentinel"
        ),
        min_length=1,
        max_length=32,
        description="This daemon's name among the members (a random suffix keeps two "
        "of the same name apart).",
    )
    interval: float = Field(
        default=1.0,
        ge=0.1,
        le=30.0,
        description="Seconds between two looks at the members and the partitions' "
        "owners: a dead daemon's partitions are taken over within about two of them.",
    )
    release_timeout: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a partition handed to another daemon may take to drain "
        "(everything fetched committed and acknowledged) before the hand-over is retried.",
    )

    @field_validator("group")
    @classmethod
    def _valid_group(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.match(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("member")
    @classmethod
    def _valid_member(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("use 1-32 letters, digits, '_' or '-'")
        return value


class DatabaseConfig(Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://sentinel@db/sentinel. Default: "
        "SQLite file sentinel.db in the state directory. The password comes from the "
        "db_password credential or SENTINEL_DB_PASSWORD.",
    )
    flush_interval: float = Field(
        default=0.2, gt=0, le=10, description="Longest a change waits before it is committed."
    )
    flush_messages: int = Field(
        default=256,
        ge=1,
        le=1_000_000,
        description="A commit starts before flush_interval is up once it would acknowledge "
        "this many messages: under load readings wait less, and each commit (an fsync) "
        "still covers this many. At a trickle only flush_interval counts.",
    )
    batch_max: int = Field(
        default=500, ge=1, le=100_000, description="Most batches folded into one transaction."
    )
    busy_timeout_ms: int = Field(
        default=5_000, ge=0, le=600_000, description="SQLite busy timeout, milliseconds."
    )
    sqlite_durability: Literal["full", "unsafe-on-power-loss"] = Field(
        default="full",
        description="SQLite: 'full' fsyncs every commit before its readings are acknowledged "
        "to the broker (PRAGMA synchronous=FULL). 'unsafe-on-power-loss' (synchronous=NORMAL) "
        "saves that fsync, but a power cut can roll back commits whose readings the broker "
        "already forgot (issue #22). Ignored for PostgreSQL.",
    )

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            url = make_url(value)
        except Exception as err:  # sqlalchemy raises several types here
            raise ValueError(f"not a database URL: {err}") from err
        if url.password:
            raise ValueError(
                "the URL contains a password; put it in the db_password credential or "
                "SENTINEL_DB_PASSWORD instead"
            )
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite and postgresql URLs are supported")
        return value


class IngestConfig(Section):
    source: Literal["mqtt", "nats"] = Field(
        default="mqtt",
        description='Where readings come from: "mqtt" (the [mqtt] broker) or "nats" (a '
        "NATS JetStream stream, [nats]; docs/OPERATIONS.md).",
    )
    queue_size: int = Field(
        default=2_000,
        ge=10,
        le=1_000_000,
        description="Messages buffered between the network thread and the pipeline worker. "
        "With MQTT 5 it is also our Receive Maximum, so the broker never overfills it.",
    )
    linger: float = Field(
        default=0.05,
        ge=0.0,
        le=60.0,
        description="Seconds the pipeline worker waits for more messages once it holds "
        "fewer than 8: a pass's fixed work (the model's call, a dozen checks' set-up) is "
        "shared by the messages in it, and a fleet whose devices publish at their own "
        "moments otherwise hands the worker one message a pass at a low rate "
        '(docs/BENCHMARKS.md, "Passes of one message"). Adds at most this much before a '
        "reading is judged; at a high rate 8 come at once. 0: judge each message as soon "
        "as it comes.",
    )
    max_payload_bytes: int = Field(
        default=65_536, ge=64, le=16_777_216, description="Larger payloads are rejected."
    )
    log_interval: float = Field(
        default=10.0,
        ge=0.1,
        le=3600,
        description="Rejected input is logged at most once per reason per interval.",
    )
    max_future_skew: float = Field(
        default=300.0,
        ge=1.0,
        le=31_622_400.0,
        description="Seconds a reading's timestamp may be ahead of the daemon's clock when "
        "the message arrives; later ones are rejected (future_timestamp). One far-future "
        "reading would otherwise become its device's last timestamp, and every genuine "
        "reading after it would be dropped as out_of_order. Keep the box's clock "
        "synchronised (NTP). Replay is not checked: a file's own time governs there.",
    )
    device_idle: float = Field(
        default=3600.0,
        ge=0,
        le=366 * 86_400,
        description="Seconds without a reading after which a device's state leaves memory "
        "(a device with an open alert, or within alerts.cooldown of one, stays). When it "
        "returns, its last timestamp and count come back from the database and its "
        "threshold and noise scale from where they were parked; it starts a new window. "
        "0 keeps every device in memory. Never less than windows.max_gap, which voids a "
        "device's partial window anyway.",
    )


class WindowConfig(Section):
    length: int = Field(default=32, ge=4, le=4096, description="Readings per window.")
    hop: int = Field(default=4, ge=1, le=4096, description="New readings between windows.")
    max_gap: float | None = Field(
        default=None,
        gt=0,
        description="Seconds between readings beyond which a device's window restarts and "
        "training data is split into runs. Default: auto (60 readings x the stream's "
        "sampling interval, learnt from its data at cold start and stored with the model; "
        "60 s at one reading per second).",
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> WindowConfig:
        if self.hop > self.length:
            raise ValueError("hop must not exceed length (readings would be skipped)")
        return self


class ModelConfig(Section):
    detector: Literal["lstm_ae", "lstm_forecast", "lstm_ensemble", "hst", "zscore"] = Field(
        default="lstm_forecast",
        description="The detector (sentinel.model.detector_types): lstm_forecast (the "
        "default: an LSTM one-step forecaster scored by its prediction "
        "error on each window's newest readings, as telemanom), lstm_ae (LSTM autoencoder, "
        "scored by its reconstruction error), lstm_ensemble (both, trained on the same "
        "data -- about 3x the forecaster's training time -- each feature's errors over "
        "each one's normal combined by model.ensemble_combine; not exportable), or a "
        "baseline: "
        "zscore (rolling per-feature z-score) or hst (river HalfSpaceTrees; replay and "
        "benchmarks only, as it cannot be saved). Both LSTMs export to TorchScript and ONNX.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto takes CUDA where present (Jetson), else the CPU."
    )
    runtime: Literal["auto", "numpy", "torch"] = Field(
        default="auto",
        description="What scores on the CPU. auto: NumPy wherever the device is the CPU and "
        "the detector is lstm_forecast or lstm_ae (the same scores to float32 rounding), so "
        "the daemon never imports torch and holds ~190 MB less; torch wherever a GPU is "
        "used and for the other detectors. torch: always torch (scoring is 1.5-2x faster "
        "per window; replay at hop 1 notices, the daemon at its default hop hardly does). "
        "numpy: always NumPy (refused with device = cuda). Training always uses torch, in "
        "the retraining process.",
    )
    torch_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Torch intra-op threads. 1 is fastest for small LSTMs on 2-4 cores.",
    )
    hidden_size: int = Field(default=32, ge=2, le=1024, description="LSTM hidden units.")
    latent_size: int = Field(default=8, ge=1, le=1024, description="Bottleneck size.")
    num_layers: int = Field(default=1, ge=1, le=4, description="LSTM layers per side.")
    epochs: int = Field(default=30, ge=1, le=10_000, description="Training epochs.")
    batch_size: int = Field(default=64, ge=1, le=65_536, description="Training batch size.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="Adam learning rate.")
    train_stride: int = Field(
        default=1, ge=1, le=4096, description="Readings between training windows."
    )
    validation_fraction: float = Field(
        default=0.2,
        ge=0.05,
        le=0.5,
        description="Share of the training readings held back (the end of each run) for "
        "early stopping and calibration; a training too short to hold back 2.5 windows' "
        "worth this way holds back that much, at most half.",
    )
    seed: int = Field(default=0, ge=0, description="Seed for weights and shuffling.")
    score_batch_max: int = Field(
        default=512, ge=1, le=65_536, description="Most windows scored in one forward pass."
    )
    score_steps: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="Judge each window by the reconstruction error of its newest N readings "
        "only; the older ones are context. 0 judges the whole window (lstm_forecast: 0 "
        "judges the newest half of the window's one-step predictions). A verdict then starts "
        "and ends with a fault instead of trailing it by a window (SKAB: 4 of 16). Recorded "
        "with each model; a change applies to models trained after it.",
    )
    forecast_horizon: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="lstm_forecast: predict each reading from the readings up to this many "
        "steps before it (1: the next reading). A lasting offset then shows in this many "
        "predictions instead of one, at the price of larger normal errors where the signal "
        "moves within that span. Below windows.length; recorded with each model, a change "
        "applies to models trained after it.",
    )
    residual_coupling: bool = Field(
        default=True,
        description="lstm_forecast: judge each feature's prediction error less what the "
        "other scored features' errors at the same reading predict of it, a linear map "
        "learnt on the training windows. A move the features make together the way they "
        "did in training (a load change moves flow, current and pressure at once) then "
        "scores low, while one sensor leaving the others, or features moving against "
        "their usual relation, scores in full. Off: each feature's own error. Recorded "
        "with each model (models trained before it score as off); a change applies to "
        "models trained after it. docs/BENCHMARKS.md, 'Coupled residuals'.",
    )
    balance_tails: bool = Field(
        default=True,
        description="A feature whose held-back training errors have a tail more than 3 "
        "times heavier than the typical feature's (the 99th percentile as a multiple of its "
        "median) has its normal error raised until its tail is 3 times the typical one. The "
        "window score is the worst feature's, and the threshold one for all: a feature with "
        "large normal errors (a server's memory dropping at each garbage collection, which "
        "no forecast can time) otherwise set the threshold for every feature, and the score "
        "saw no fault smaller than that. Recorded in each model's normal errors; a change "
        "applies to models trained after it. docs/BENCHMARKS.md, 'Many-channel servers'.",
    )
    ensemble_combine: Literal["max", "mean", "geomean", "min"] = Field(
        default="min",
        description="lstm_ensemble only: how a feature's two errors, each as a multiple of "
        "its member's normal error, become one: min (the default: a feature alarms when "
        "both members see it -- the fewest false alarms), geomean, mean, or max (either "
        "member's alarm is the ensemble's -- the most recall, the autoencoder's false "
        "alarms with it). Recorded with each model. docs/BENCHMARKS.md, 'LSTM ensemble', "
        "has all four measured.",
    )
    drift_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1000.0,
        description="A feature whose training level drifts -- the means of the training "
        "data's two halves differ by more than this many of the halves' standard "
        "deviations -- is judged by its changes, not its level, as if declared "
        'level = "relative" (logged as training_feature_drifting; recorded with the '
        "model). Stationary channels, periodic ones included, stay far below 1; a slow "
        "temperature wandering with the ambient does not. A feature's explicit level wins. "
        "0: never decided automatically.",
    )
    slow_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="A feature whose training windows' means spread more than this many "
        "times its spread inside a window -- a channel that barely moves within a window "
        "and wanders between windows, whose level a window cannot put in context -- is "
        "judged by its changes too (white noise gives 1/sqrt(windows.length)). A "
        "feature's explicit level wins. 0 (default): off. Measured at 2.0 "
        "(docs/BENCHMARKS.md): better on SKAB, UCR and the synthetic suite's precision, but "
        "a lasting level shift on such a channel is seen at its step only, never held or "
        "re-baselined, and a pump fleet's channels are nearly all slow.",
    )

    @model_validator(mode="after")
    def _numpy_on_the_cpu(self) -> ModelConfig:
        if self.runtime == "numpy" and self.device == "cuda":
            raise ValueError(
                "model.runtime = 'numpy' scores on the CPU; with device = 'cuda' use runtime "
                "'auto' or 'torch'"
            )
        return self


# The most of ``retrain.reservoir_age`` a cold start on the reservoir waits to cover: its
# pruning keeps the readings just under that age, so waiting for all of it could last for ever.
COLD_START_SPAN_OF_AGE = 0.9


class ColdStartConfig(Section):
    readings: int = Field(
        default=3_000,
        ge=64,
        le=10_000_000,
        description="Readings per stream (all devices together) collected before the first "
        "model is trained when no saved model exists. The first model also waits for `span`.",
    )
    span: float = Field(
        default=3_600.0,
        ge=0,
        le=366 * 86_400,
        description="Seconds of the stream's own time the first model's readings must also "
        "cover, read off each device's own clock (its newest timestamp minus its oldest) "
        "and covered by a quarter of the devices or more, so one clock far behind the "
        "others does not end the wait. A plant's loads, cycles "
        "and thermal lags run in its own time, not in readings: 3,000 readings of a dozen "
        "pumps read every second are four minutes, one or two load changes, and the model "
        "and every device's checks would start on them. The default, an hour, binds only "
        "fast streams (3,000 readings of one meter read every 5 minutes are ten days). "
        "Stops binding at `max_readings`. A device that joins the stream after its model "
        "(nothing stored of it, not warmed with the model) learns for as long: its first "
        "`span` seconds are judged with alerts suppressed. 0: `readings` alone, and a "
        "joining device judged from its first window.",
    )
    max_readings: int = Field(
        default=200_000,
        ge=64,
        le=10_000_000,
        description="Readings per stream at which the first model is trained whatever "
        "`span` they cover (never fewer than `readings`): a large fleet read every second "
        "would otherwise hold, and train on, an hour of every device. 200,000 readings are "
        "an hour of 55 devices read every second, as many as `retrain.reservoir_rows` "
        "holds and a daily retraining of such a fleet trains on anyway; a cold start on "
        "the reservoir (retraining on) is bounded by that too. Held in memory only with "
        "retraining off (about 270 bytes a reading).",
    )
    warm_readings: int = Field(
        default=3_000,
        ge=0,
        le=1_000_000,
        description="Latest readings per device, from before its stream's first model (the "
        "rows it was trained on), that are judged with alerts suppressed once the model "
        "arrives, so each device's threshold, spike memory (noise scale, normal pulses) "
        "and constant check start warm instead of at its first scored window. Replay "
        "takes them from its training rows. The default, a whole default cold start, holds "
        "at least four of a pulse whose period is up to 750 readings, enough for the spike "
        "memory to know it (a daily pulse at 5-minute sampling is 288). Held only while "
        "the stream waits for its model: this many x (4 x features + 8) bytes per device. "
        "0: start cold.",
    )

    def progress(self, collected: int, covered: float | None) -> float:
        """How far a cold start that holds ``collected`` readings covering ``covered``
        seconds of stream time is, 0 to 1; it trains at 1."""
        fill = collected / self.readings
        if self.span > 0:
            fill = min(fill, (covered or 0.0) / self.span)
        return min(1.0, max(fill, collected / max(self.readings, self.max_readings)))

    def ready(self, collected: int, covered: float | None) -> bool:
        """True once such a cold start trains its first model."""
        return self.progress(collected, covered) >= 1.0

    def short_of_span(self, covered: float | None) -> str | None:
        """Why a cold start that is ready covering ``covered`` seconds trains on less of
        the stream's time than ``span`` (it reached ``max_readings`` first), as a hint that
        names the settings; None where it covers the span."""
        if self.span <= 0 or (covered or 0.0) >= self.span:
            return None
        return (
            f"the first model learns {covered or 0.0:.0f} s of the stream's time, not "
            f"cold_start.span ({self.span:g} s): its readings reached cold_start.max_readings "
            f"({max(self.readings, self.max_readings)}) first, as a large fleet's do. Each "
            "device goes on learning, alerts suppressed, until it has sent the span, but the "
            "model knows less of the plant than its devices' checks; raise "
            "cold_start.max_readings (and retrain.reservoir_rows, which bounds it) to train "
            "it on the whole span, at a longer first training"
        )


class ThresholdConfig(Section):
    method: Literal["quantile", "spot"] = Field(
        default="quantile",
        description="quantile: each device's rolling quantile of its normal scores times a "
        "multiplier. spot: a drift-aware extreme-value threshold (DSPOT, Siffer et al. 2017) "
        "on the log of the score, fitted on the model's held-back scores and then adapted "
        "per device; its expected false-alarm rate is about `risk` per window.",
    )
    risk: float = Field(
        default=1e-3,
        gt=0,
        lt=0.5,
        description="spot: probability that a normal window exceeds the threshold. Expected "
        "false alarms per device-day = risk x windows per day (86400 / (hop x reading "
        "interval)), before alert grouping.",
    )
    spot_level: float = Field(
        default=0.9,
        gt=0.5,
        lt=1.0,
        description="spot: quantile of the calibration scores above which the tail is fitted.",
    )
    spot_depth: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="spot: normal windows in the moving mean that DSPOT measures from, i.e. "
        "how fast it follows slow drift.",
    )
    quantile: float = Field(
        default=0.995,
        gt=0.5,
        lt=1.0,
        description="Quantile of each device's recent normal scores the threshold tracks.",
    )
    multiplier: float = Field(
        default=1.5, ge=1.0, le=100.0, description="Headroom over that quantile."
    )
    history: int = Field(
        default=2_000, ge=50, le=1_000_000, description="Recent normal scores remembered."
    )
    warmup: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Normal windows per device judged against the model's calibration "
        "threshold alone; from then on the device's own quantile x multiplier is blended "
        "with it, the device's share n / (n + prior_windows) after n normal windows. Must "
        "be at least 1 / (1 - quantile): fewer samples make the quantile the running "
        "maximum, and a slowly rising fault then raises its own threshold.",
    )
    prior_windows: int = Field(
        default=200,
        ge=0,
        le=1_000_000,
        description="How many normal windows the model's calibration threshold counts "
        "for once a device is past warmup (shrinkage): with n normal windows the threshold "
        "is (n x own + prior_windows x calibration) / (n + prior_windows), so an early "
        "quantile from a few hundred windows moves it only part of the way and the device "
        "earns its own threshold as it learns. 0: the device's own quantile alone, as "
        "soon as it is warm.",
    )
    adapt: bool = Field(
        default=True,
        description="Normal windows keep teaching each device's threshold, so it follows "
        "slow drift. false: a device's threshold is learnt once per model -- seeded from "
        "the held-back windows of the retraining run that produced the model, or from the "
        "device's first warmup normal windows -- and then kept until the next model, so "
        "thresholds change only with a model version (and a re-baseline, unless "
        "rebaseline_after = 0).",
    )
    forget_spells: bool = Field(
        default=True,
        description="quantile method: what a fault's windows judged normal taught the "
        "threshold, above the threshold the fault began with, is forgotten when it ends "
        "with the device back at its usual score (audited, threshold_spell_forgotten). "
        "Such windows raised the threshold that the rest of the fault and the next one "
        "were judged against (a 60 % amplitude growth for 300 readings took a threshold "
        "from 3.3 to 7.1, and the second such fault went unseen). A change that stays is "
        "learnt as before. false: nothing is forgotten.",
    )
    spell_gap: float = Field(
        default=1.0,
        ge=0,
        le=1_000,
        description="Window spans that end a device's anomalous spell (forget_spells): a "
        "run of anomalous windows, and of windows scoring above the threshold the spell "
        "began with, no further apart.",
    )
    rebaseline_after: float | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="Seconds a lasting upward change of a device's score level (found by a "
        "Page-Hinkley test on the log score) may keep its windows mostly anomalous before "
        "the device's threshold re-baselines to the new level (audited in audit_events). "
        "Bounds how long a new normal can alert; a real fault that lasts longer is "
        "accepted as normal after this (until it ends: see rebaseline_max_factor). 0 "
        "disables re-baselining. Default: auto, 512 readings x the stream's sampling interval "
        "(learnt from its data at cold start and stored with the model; 8 min 32 s at one reading "
        "per second).",
    )
    rebaseline_max_factor: float = Field(
        default=10.0,
        ge=1.0,
        le=1e6,
        description="The most one re-baseline may multiply a device's threshold by (spot: "
        "its moving mean, in the same units); a larger change re-levels again after another "
        "rebaseline_after. With the quantile method a re-baseline is undone once the "
        "device's windows score under the threshold before it for half of "
        "rebaseline_after (the fault that lasted long enough to re-baseline has ended), "
        "audited as threshold_rebaseline_reverted.",
    )
    drift_delta: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="Page-Hinkley tolerance on the log score: level changes smaller than "
        "this factor (0.1 ~ 10%) are ignored.",
    )
    drift_threshold: float = Field(
        default=20.0,
        gt=0,
        le=100_000,
        description="Page-Hinkley detection threshold (lambda) on the cumulative log-score "
        "excess: a step of d in log score is found after about lambda / d windows.",
    )
    recurring: bool = Field(
        default=True,
        description="Learn each device's recurring excursions of the score (a pump that runs "
        "at the same hour every day, a timed actuation): a run of windows above the threshold "
        "by the score alone is normal when recurring_count remembered runs about as large "
        "lie at the multiples of the newest one's distance back from its onset (within 5%; "
        "others may lie between them), and "
        "stays normal while no window scores above recurring_margin x their largest peak "
        "and it lasts no longer than 1.5 x their longest plus a window. A first, irregular, "
        "larger or longer one alerts. The memory is the device's, kept across model swaps "
        "and restarts (sentinel/judge/recurring.py).",
    )
    recurring_count: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Earlier evenly spaced excursions that make one normal, when they were "
        "normal themselves (in the model's training readings, judged by the warm start, or "
        "recurring); one more when any of them alerted and none was in the training readings. "
        "So a daily pattern seen on two training days is known at once, one seen on one "
        "alerts on its first live day only, and one that starts after training alerts on its "
        "first recurring_count + 1 occurrences.",
    )
    recurring_known: int = Field(
        default=0,
        ge=0,
        le=1_000,
        description="Excursions at least about as large, remembered as normal (in the model's "
        "training readings or judged recurring), that make one normal whatever its timing: "
        "a pump's load switches at random times score alike every time. It stays within "
        "their peak and duration limits, as a periodic one does. 0 (default): only periodic "
        "excursions are normal (what the rule costs and gains: docs/BENCHMARKS.md, "
        '"Known excursions").',
    )
    recurring_frequent: int = Field(
        default=3,
        ge=0,
        le=1_000,
        description="Episodes of live excursions at least about as large, alerted or not, "
        "begun within the last recurring_within readings, that make one normal whatever its "
        "timing: it recurs as often as normal (a count's bursts, a garbage collector's "
        "drops, load switches that a short training did not hold alerted at every "
        "occurrence). Within the same peak and duration limits as a periodic one. "
        "Excursions less than 64 readings apart are one episode (a fault's score dipping "
        "under the threshold and back); the training readings' excursions count only where "
        "they alone are that frequent. "
        "0: off.",
    )
    recurring_within: int = Field(
        default=1_000,
        ge=10,
        le=10_000_000,
        description="Readings back from an excursion's onset over which recurring_frequent "
        "counts earlier ones.",
    )
    recurring_margin: float = Field(
        default=2.0,
        ge=1.0,
        le=1_000.0,
        description="An earlier excursion counts when its peak is at least 1 / "
        "recurring_margin of this one's score, as multiples of the threshold then in force "
        "or of the model's calibration threshold times the device's re-baseline factor; a "
        "recurring excursion whose window scores above recurring_margin x the largest such "
        "peak, in both, alerts.",
    )
    recurring_memory: int = Field(
        default=16,
        ge=1,
        le=1_000,
        description="Excursions remembered per device, newest kept (saved with the thresholds).",
    )

    @model_validator(mode="after")
    def _recurring_memory_holds_count(self) -> ThresholdConfig:
        if self.recurring_count >= self.recurring_memory:
            raise ValueError("recurring_count must be below recurring_memory")
        if self.recurring_known > self.recurring_memory:
            raise ValueError("recurring_known must be at most recurring_memory")
        if self.recurring_frequent > self.recurring_memory:
            raise ValueError("recurring_frequent must be at most recurring_memory")
        return self

    @model_validator(mode="after")
    def _risk_beyond_level(self) -> ThresholdConfig:
        if self.risk >= 1 - self.spot_level:
            raise ValueError("risk must be below 1 - spot_level (the fitted tail's mass)")
        return self

    @model_validator(mode="after")
    def _warmup_supports_quantile(self) -> ThresholdConfig:
        needed = math.ceil(1 / (1 - self.quantile) - 1e-9)
        if self.warmup < needed:
            raise ValueError(
                f"warmup {self.warmup} is too short to estimate the {self.quantile} quantile: "
                f"use at least {needed} (1 / (1 - quantile))"
            )
        if self.history < self.warmup:
            raise ValueError("history must be at least warmup")
        return self


class SpikesConfig(Section):
    """Per-reading spike check beside the model (see sentinel/judge/spikes.py)."""

    enabled: bool = Field(
        default=True,
        description="Judge every reading against the median of its neighbours (a Hampel "
        "identifier): a reading far off them makes its windows anomalous even where the "
        "window's reconstruction error stays normal. Catches 1-3 reading spikes that a "
        "window's error averages away.",
    )
    k: float = Field(
        default=10.0,
        gt=0,
        le=1_000,
        description="A reading is a spike when it is more than k times the device's noise "
        "(its robust standard deviation around the local median) off that median. Normal "
        "Gaussian noise exceeds 10 about once in 10^23 readings; real sensors have heavier "
        "tails, hence the margin.",
    )
    neighbours: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Readings on each side of the local median. Excursions shorter than "
        "neighbours + 1 readings are spikes; longer ones are left to the model. A reading is "
        "judged once this many newer readings have arrived. At most (windows.length - 1) / 2 "
        "is used.",
    )
    history: int = Field(
        default=1_000,
        ge=50,
        le=1_000_000,
        description="Recent readings per device whose residuals give its noise scale. A "
        "sensor that turns noisier for good is re-learnt after about half of this.",
    )
    warmup: int = Field(
        default=200,
        ge=10,
        le=1_000_000,
        description="Readings per device learnt before its spikes are judged.",
    )
    relations: bool = Field(
        default=True,
        description="Also judge each reading's residual from its device's relation fit (the "
        "relation check's, see [relations]) against the median of its neighbours: a reading "
        "where one feature alone left the others by more than relations_k times the noise "
        "of that departure is a spike on that feature. A load change moves every feature "
        "at once, in one step where readings are minutes apart, and then hides a short "
        "excursion of one feature from its own median; the residuals leave the load out. "
        "Devices without relations (fewer than two varying features, or not yet learnt) "
        "are judged on their own readings only.",
    )
    relations_k: float = Field(
        default=12.0,
        gt=0,
        le=1_000,
        description="A reading's departure from its device's relations is a spike when it "
        "is more than relations_k times its noise (a z-score; reported as a spike's z times "
        "k / relations_k). Above k: the departure is estimated from a fit on all features, "
        "whose residuals share the noise of the features that predict them, and each "
        "reading is judged twice, on its own residual and on its departure.",
    )
    recurring: bool = Field(
        default=True,
        description="Learn each device's normal pulses: a spike on a feature is normal, and "
        "leaves its window alone, when the device had at least recurring_count earlier "
        "spikes on that feature, on the same side and at least 1 / recurring_margin of its "
        "size, within its last recurring_within readings (it recurs as often as normal), "
        "or when it and the last recurring_count earlier ones of about its size are evenly "
        "spaced, within 5% (it recurs with a learnt period, however long). A first, rare, "
        "irregular or larger-than-ever spike is still one.",
    )
    recurring_count: int = Field(
        default=3,
        ge=1,
        le=1_000,
        description="Earlier similar spikes that make a spike normal: within "
        "recurring_within readings, or evenly spaced (a burst of adjacent spiking readings "
        "counts once). The first recurring_count occurrences of a pulse are spikes.",
    )
    recurring_within: int = Field(
        default=1_000,
        ge=10,
        le=10_000_000,
        description="Readings per device over which earlier spikes are counted: a spike "
        "with recurring_count similar-or-larger ones within this many readings is normal "
        "(irregular pulses, bursty counts; at 3 in 1,000, spikes more often than about one "
        "in 330 readings). Regular pulses are learnt by their period instead, however far "
        "apart.",
    )
    recurring_margin: float = Field(
        default=1.5,
        ge=1.0,
        le=100.0,
        description="An earlier spike is similar-or-larger when its residual is on the same "
        "side and at least 1 / recurring_margin times this spike's: a spike more than this "
        "factor above every earlier one is never normal. Readings within this factor of "
        "the limit (z above k / recurring_margin) are remembered as spikes are, so that a "
        "pulse whose size straddles k is learnt from its near misses too.",
    )
    recurring_memory: int = Field(
        default=32,
        ge=1,
        le=1_000,
        description="Spikes remembered per device and feature, newest kept (the memory is "
        "bounded: at most this many per feature, saved with the noise scales).",
    )
    tail: bool = Field(
        default=True,
        description="Learn each device's tails: where a feature's readings left their "
        "median by more than k / 2 noise scales without being spikes in at least three "
        "episodes 64 readings apart within history, on one side (heavy-tailed noise: "
        "latencies, request counts; Gaussian noise hardly ever does), the spike limit on "
        "that side rises from k to what a normal reading exceeds once in a million by "
        "those excursions' tail, at most recurring_margin x the largest of them. Off: k "
        "for every feature.",
    )
    vouch: bool = Field(
        default=True,
        description="With recurring: a window anomalous by the model's score alone whose "
        "only evidence is one reading (and the neighbours readings after it, which the "
        "forecaster predicts from it) that this check knows as one of the device's normal "
        "excursions (one that recurs, or within a limit its tail widened) opens no alert: "
        "the score judges that reading again without the device's memory, and heavy-tailed "
        "noise, a pump's ramps read every second or a known burst alerted at every "
        "recurrence. A first, rare or larger-than-ever excursion is not vouched for, nor "
        "one the score sees beside other evidence.",
    )

    @model_validator(mode="after")
    def _warmup_within_history(self) -> SpikesConfig:
        if self.warmup > self.history:
            raise ValueError("warmup must not exceed history")
        if self.recurring_count > self.recurring_memory:
            raise ValueError("recurring_count must not exceed recurring_memory")
        return self


class LevelsConfig(Section):
    """Window-level check beside the model (sentinel/model/levels.py, sentinel/judge/levels.py)."""

    enabled: bool = Field(
        default=False,
        description="Judge each window's mean of every feature against the means of the "
        "model's training windows: a window whose level is more than k of their standard "
        "deviations off is anomalous even where its reconstruction error stays normal. "
        "Catches small lasting shifts of one channel (a valve half closed) that a "
        "reconstruction follows. Off by default: its limits are training's, so a lasting "
        "new normal keeps firing until a model is trained on it, and a model trained on "
        "a whole fleet has wide limits.",
    )
    k: float = Field(
        default=8.0,
        gt=0,
        le=1_000,
        description="A window is anomalous when one feature's window mean is more than k "
        "standard deviations of training's window means from their mean. Window means of "
        "real plants wander more than Gaussian noise would, hence the margin.",
    )
    max_slowness: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="Leave out of the level check the features whose window means spread "
        "through the training data more than this many times their spread within a window "
        "(the slowness of model.slow_ratio; white noise gives 1/sqrt(window)): their "
        "level wanders, so training's limits do not say where it belongs on a new day. "
        "0 judges every feature. Applies at once to models trained since slowness is "
        "saved with their level statistics; older models judge every feature.",
    )


class ShiftsConfig(Section):
    """Lone-shift check: one feature's level steps while every other holds still
    (sentinel/judge/shifts.py; issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Per device and feature, learn the spread of a step statistic (the mean "
        "of the newest span readings less the mean of the span before) over its normal "
        "readings, and judge a window anomalous where one feature stepped beyond its limit "
        "while every other feature's step stayed under quiet times its own spread. A normal "
        "change of load moves a plant's channels together (or through a lag); a sensor "
        "offset or a part giving way moves one alone. The alert names the feature "
        "(level:FEATURE). Streams of one feature are not judged; a step within 3 x span "
        "readings after a command or set point the model learnt changed is its response.",
    )
    k: float = Field(
        default=8.0,
        gt=0,
        le=1_000,
        description="A feature's step is a shift when it exceeds k times its spread (and "
        "margin x the largest lone step the device showed among its normal readings, where "
        "that is higher).",
    )
    quiet: float = Field(
        default=3.0,
        gt=0,
        le=1_000,
        description="Every other judged feature's step must be under this many times its "
        "spread (and none beyond k within the 2 x span readings before): a step the "
        "channels took together, or one following another's through a short lag, is a "
        "change of load, not a fault.",
    )
    margin: float = Field(
        default=1.5,
        ge=1.0,
        le=1_000,
        description="A feature that steps alone as part of its normal life (a set point, a "
        "valve) is judged against margin x the largest lone step among the device's last "
        "history normal readings, where that is above k.",
    )
    span: int = Field(
        default=8,
        ge=1,
        le=2048,
        description="Readings on each side of the step statistic: a step is judged at its "
        "full size span readings after it. Windows shorter than 2 x span readings are not "
        "judged by this check.",
    )
    warmup: int = Field(
        default=512,
        ge=16,
        le=1_000_000,
        description="Normal readings a device learns before this check judges it. A pump "
        "that joins after training, judged from 256, raised 3 false alerts on a lagging "
        "temperature in its first 40 minutes read every 5 s; training rows count.",
    )
    history: int = Field(
        default=2048,
        ge=64,
        le=1_000_000,
        description="The newest normal readings whose step statistics set a device's "
        "spreads and limits.",
    )


class RelationsConfig(Section):
    """Cross-channel check beside the model (sentinel/judge/relations.py; issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Judge each device's window means against the relations between its "
        "features that the device's own normal windows showed: each feature's mean is "
        "predicted from the other features' means (a linear fit per device, refitted as "
        "normal windows arrive), and a window whose residual on one feature is more than k "
        "times the device's normal residual scale is anomalous; the alert names the feature "
        "whose departure explains the residuals (relation:FEATURE). A pump's flow, pressure "
        "and current move together with its load; a shift, drift or decorrelation of one of "
        "them alone breaks that, while a normal load change moves them all. Streams with "
        "fewer than two varying features are not judged.",
    )
    k: float = Field(
        default=6.0,
        gt=0,
        le=1_000,
        description="A window is anomalous when a feature's residual is more than k times "
        "the device's normal residual scale (the quantile below of its normal windows' "
        "absolute residuals).",
    )
    reach: float = Field(
        default=1.0,
        ge=0.0,
        le=1_000_000,
        description="Judge a feature only while the other features lie within reach x the "
        "farthest any learnt window's did (squared Mahalanobis distance in their learnt "
        "covariance): a prediction extrapolated to an operating point the device has not "
        "shown is a guess. 1 judges inside the learnt envelope only; 0 judges every window.",
    )
    quantile: float = Field(
        default=0.995,
        gt=0.5,
        lt=1.0,
        description="The quantile of the learnt windows' absolute residuals (each from a "
        "fit that did not see the window) that is the residual scale k multiplies.",
    )
    warmup: int = Field(
        default=200,
        ge=8,
        le=1_000_000,
        description="Windows a device learns before its relations are judged (and at least "
        "8 per feature, so a fit on many features is not judged from a handful of windows). "
        "The windows of the device's warm-start readings count, all of them: they are the "
        "model's training rows. The residual scale is the quantile of the learnt windows' "
        "residuals, so below 1 / (1 - quantile) (200 at 0.995) it is their largest: a device "
        "that joined after training was judged on a third of its first day and raised "
        'twice the false alerts (docs/BENCHMARKS.md, "Relations learnt on 200 windows").',
    )
    history: int = Field(
        default=512,
        ge=16,
        le=1_000_000,
        description="Normal window means remembered per device; the relations are refitted "
        "on them.",
    )
    refit: int = Field(
        default=16,
        ge=1,
        le=1_000_000,
        description="Normal windows learnt between two refits of a device's relations. A "
        "device at an operating point its learnt windows never held is not judged (reach) "
        "until a refit holds windows there: 16 windows at hop 4 is about a minute of "
        "readings at one a second, five minutes at one every 5 s.",
    )
    sustained: float = Field(
        default=3.0,
        ge=0.0,
        le=1_000.0,
        description="Also anomalous: a feature whose residual, averaged over the windows "
        "one window's readings span, is more than sustained x the largest such average "
        "the device's learnt windows showed (each from a fit that did not see them). A "
        "break of one to a few scales that lasts (a drift, a slipping coupling) never "
        "reaches k in one window, but its average does not fall back as noise does. "
        "Judged once a device's learnt windows hold 32 of the averages' correlation times "
        "(about 160 windows where the residuals are noise, more where they wander; a "
        "history shorter than that never judges it). 0 judges single windows only.",
    )


class StuckConfig(Section):
    """Frozen-sensor check beside the model (sentinel/model/stuck.py, sentinel/judge/stuck.py;
    issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Judge how long each feature's newest readings repeat one value exactly: "
        "a window whose newest readings of a feature hold one value for at least that "
        "feature's limit is anomalous, and the alert names it (stuck:FEATURE). A frozen "
        "sensor (a stale register, a dead transmitter) is predicted better than a live "
        "one, so the model's score cannot see it. Each limit is max(min_run, factor x the "
        "longest run of identical readings in the model's training data), so a channel "
        "quantised coarsely relative to its noise gets a long limit by itself. A limit "
        "longer than windows.length is not judged (the window alone cannot show it); "
        "features constant in training are the constant check's; a model saved before "
        "this check existed is not judged.",
    )
    min_run: int = Field(
        default=8,
        ge=2,
        le=1_000_000,
        description="The shortest run of identical readings ever judged anomalous, in "
        "readings: a floor for channels whose training never repeated a value more than "
        "two or three times, where factor x that would flag a handful of repeats.",
    )
    factor: float = Field(
        default=3.0,
        ge=1.0,
        le=1_000.0,
        description="A feature's limit is this multiple of the longest run of identical "
        "readings in one training segment. Runs of real channels are not independent "
        "(a level sitting near a quantisation step stays on one value for a while), and "
        "the longest run of a short training set underestimates the channel's, hence "
        "the margin; 1 would flag any run as long as training's longest.",
    )


class PeriodsConfig(Section):
    """Daily-schedule check beside the model (sentinel/model/periods.py,
    sentinel/judge/periods.py; issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Judge each feature with a cycle longer than two of the model's windows (a "
        "daily schedule, found in the training data's autocorrelation, up to 4,096 "
        "readings, with three cycles of training) by its newest cycle as a whole: the "
        "distance of the last period to its nearest earlier one, among training's and the "
        "device's own last 16, over the largest such distance training held. An air "
        "handler that never starts one morning leaves every reading at a level it holds "
        "each night, which no window of the model's context shows; the day against the "
        "days before it does. A window is anomalous while that ratio exceeds factor and the "
        "newest part of the period that differs lies within an eighth of a period, and the "
        "alert names the feature (period:FEATURE). Features constant in training, features "
        "without such a cycle, and models saved before this check existed are not judged; "
        "a device is judged from its first full period of readings (the warm start's "
        "training rows count), and its periods are saved with the thresholds.",
    )
    factor: float = Field(
        default=1.5,
        gt=1.0,
        le=1_000.0,
        description="A window is anomalous when its feature's last period is further than "
        "this multiple of training's largest distance from every earlier period. "
        "docs/BENCHMARKS.md ('A schedule that did not run').",
    )


class NoiseConfig(Section):
    """Noisy-sensor check beside the model (sentinel/model/noise.py, sentinel/judge/noise.py;
    issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Judge how rough each feature's readings are within a window: the "
        "median absolute difference between consecutive readings. A window rougher than "
        "factor x the roughest window of the model's training data is anomalous, and the "
        "alert names the feature (noise:FEATURE). A sensor whose noise grows (a loose "
        "connector, a failing transmitter) raises the model's error on every reading, but "
        "where readings the model cannot anticipate (commands, load changes) set its normal "
        "tail, the score alone misses it; a step or a spike moves the median of a window's "
        "differences not at all. A feature whose roughness was 0 in every training window "
        "(a set point, a counter, a command, a noise-free channel held at levels) is judged "
        "against a floor of 0.001 x max(1, |its median training value|) instead, while it "
        "moves by less than half of its median training step (noise or a drift, not its own "
        "steps coming more often); features constant in training are not judged, nor is a "
        "model saved before this check existed.",
    )
    factor: float = Field(
        default=2.0,
        gt=1.0,
        le=1_000.0,
        description="A window is anomalous when a feature's roughness exceeds this multiple "
        "of the roughest window training held. docs/BENCHMARKS.md ('A noise check, "
        "probed'): at 2 no false episode on the simulated fleet or the synthetic suite; "
        "1.5 caught more noise bursts and raised more false episodes on SKAB.",
    )


class CommandLevelsConfig(Section):
    """Command-level check: a channel that settles away from the level its command sets
    (sentinel/judge/command_levels.py; issue #21)."""

    enabled: bool = Field(
        default=True,
        description="Where a model learnt command channels (inputs whose changes come with a "
        "scored channel's step, as one-hot spacecraft commands do), remember per device the "
        "level each other channel settles at after each command, and judge it after the "
        "next ones: a channel settled away from that command's level is a broken relation "
        "(relation:FEATURE), whatever its score; each level on its own may be a normal one "
        "(another command's). Only channels whose level the commands set are judged.",
    )
    k: float = Field(
        default=8.0,
        gt=0,
        le=1_000,
        description="A settled level is off when it lies more than k times the spread of "
        "that command's earlier settled levels (at least the channel's noise over the "
        "readings measured) from their median.",
    )
    settle: int = Field(
        default=16,
        ge=1,
        le=100_000,
        description="Readings after a command before the channel's level counts as settled.",
    )
    span: int = Field(
        default=32,
        ge=8,
        le=100_000,
        description="Settled readings a level is the median of: the first span after each "
        "command make its record; the newest span are judged.",
    )
    min_sends: int = Field(
        default=3,
        ge=2,
        le=1_000,
        description="Records of a command needed before the levels after it are judged; "
        "commands training never sent are learnt from their first sends live.",
    )
    separation: float = Field(
        default=0.25,
        gt=0,
        le=100,
        description="A settled level is off only when it is also at least this share of the "
        "smallest distance between two commands' levels of that channel from its own.",
    )
    explained: float = Field(
        default=10.0,
        gt=1,
        le=100_000,
        description="A channel is judged only where the commands set its level: its levels "
        "after different commands lie this many times the largest spread of one command's "
        "levels apart.",
    )
    memory: int = Field(
        default=16,
        ge=2,
        le=10_000,
        description="Records kept per device and command, newest first: a response that "
        "changed for good is learnt once it is their median.",
    )


class ConstantsConfig(Section):
    """Departure check of the features constant in a model's training data
    (sentinel/judge/constants.py; issue #21)."""

    enabled: bool = Field(
        default=True,
        description="A feature constant in the training data (a command flag, a set point, a "
        "sensor that was off) is left out of the model's score, whose error ratio to its "
        "~0 training error would be 10^3-10^8 at any change. This check judges it instead: "
        "a window holding a reading away from every value accepted for it on the device "
        "(at first only its training value) is anomalous, and the alert names it. false: "
        "such features are not judged at all.",
    )
    tolerance: float = Field(
        default=1e-4,
        gt=0,
        le=1.0,
        description="A reading departs from an accepted value v when it is more than "
        "tolerance x max(1, |v|) away from it; float noise stays within this.",
    )
    relearn_after: int = Field(
        default=16,
        ge=1,
        le=1_000_000,
        description="Readings after which a departure stops alerting, per device and "
        "feature: a new value held for this many readings in a row becomes an accepted "
        "value (a flag that switched and stays switched alerts once, and later switches "
        "between known values not at all); a feature that keeps departing this long "
        "without settling on one value is no longer judged on that device. Both are "
        "audited (constant_value_learnt, constant_feature_released). Kept across a "
        "restart with the thresholds (thresholds.json), for the same model.",
    )
    accept_returns: int = Field(
        default=1,
        ge=0,
        le=1_000,
        description="Excursions to one value that came back to an accepted value, per "
        "device and feature, after which that value is accepted too (audited, "
        "constant_value_learnt with returns): a command sent as a pulse, never seen in "
        "training, alerts at its first pulse and not at every later one, as a flag that "
        "switches and stays alerts once; a feature that blips to a new value now and then "
        "stops alerting on it. 0: only a value held relearn_after readings is learnt.",
    )
    sibling_pulses: bool = Field(
        default=True,
        description="Read a pulse (at most 2 readings) of a feature constant in training, "
        "from the value the model's pulse trains rest at to one they pulsed to in "
        "training, as one of theirs: a command channel whose command the training data "
        "happened not to hold, beside channels of commands it did (one-hot commands, as "
        "spacecraft telemetry comes); a channel's step at such a pulse is then a commanded "
        "step, as at a learnt command's, and opens no alert by itself. Held longer, it is a "
        "departure from its first reading. false: its first pulse alerts (accept_returns).",
    )


class AlertsConfig(Section):
    open_after: int = Field(
        default=2,
        ge=1,
        le=1_000,
        description="Anomalous windows (M) that open an alert, within the last open_within.",
    )
    open_within: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Windows (N) in which open_after anomalous ones open an alert: M of N. "
        "Default: open_after, i.e. M consecutive windows.",
    )
    close_after: int = Field(
        default=4, ge=1, le=10_000, description="Consecutive normal windows that close it."
    )
    top_features: int = Field(
        default=3, ge=1, le=64, description="Contributing features kept per alert."
    )
    cooldown: float | None = Field(
        default=None,
        ge=0,
        le=7 * 86_400,
        description="Seconds after an alert ends during which the same device and stream "
        "opens no new alert for the same fault: an anomaly whose top feature is the ended "
        "alert's reopens and continues it (one that an operator resolved is not reopened; "
        "such anomalies are then suppressed); one led by another feature opens a new "
        "alert. Default: "
        "auto, 64 readings (two windows' span) x the stream's learnt sampling interval, at "
        "most a day (64 s at one reading per second, 64 min at one a minute).",
    )
    severity_warning: float = Field(
        default=1e-4,
        gt=0,
        lt=1,
        description="Exceedance probability (chance that a normal window scores this high) "
        "at or below which an alert is at least 'warning'; above it, 'info'.",
    )
    severity_critical: float = Field(
        default=1e-6,
        gt=0,
        lt=1,
        description="Exceedance probability at or below which an alert is 'critical'.",
    )

    @model_validator(mode="after")
    def _severity_order(self) -> AlertsConfig:
        if self.severity_critical >= self.severity_warning:
            raise ValueError("severity_critical must be below severity_warning")
        return self

    @model_validator(mode="after")
    def _m_of_n(self) -> AlertsConfig:
        if self.open_within is not None and self.open_within < self.open_after:
            raise ValueError("open_within (N) must be at least open_after (M)")
        return self

    @property
    def window_span(self) -> int:
        return self.open_within or self.open_after


class RetrainConfig(Section):
    """Retraining on fresh data: reservoir, schedule, champion/challenger, registry size."""

    enabled: bool = Field(
        default=True,
        description="Keep a training reservoir per stream on disk and retrain on a schedule. "
        "Off: the cold start collects in memory and the first model is never replaced.",
    )
    every: float = Field(
        default=86_400.0,
        ge=60,
        le=366 * 86_400,
        description="Seconds between scheduled retraining runs of each stream (ignored when "
        "cron is set). The next run time is kept in <state_dir>/retrain_schedule.json, so a "
        "restart does not start the countdown afresh; a run that fell due while the daemon "
        "was down runs once at start.",
    )
    cron: str | None = Field(
        default=None,
        description="Crontab expression (minute hour day month weekday, UTC) for the runs, "
        "e.g. '0 3 * * *'; overrides every.",
    )
    misfire_grace_time: float = Field(
        default=3_600.0,
        ge=1,
        le=7 * 86_400,
        description="Seconds a run may start late (daemon busy, machine suspended) and still "
        "run; APScheduler's default of 1 s silently skips late runs. Missed runs coalesce "
        "into one.",
    )
    reservoir_rows: int = Field(
        default=200_000,
        ge=256,
        le=50_000_000,
        description="Most readings kept per stream in the on-disk reservoir (oldest go first).",
    )
    reservoir_age: float | None = Field(
        default=None,
        ge=60,
        le=10 * 366 * 86_400,
        description="Readings older than this many seconds (event time, relative to the "
        "newest reading) leave the reservoir. Default: auto, 14 days or 10,000 readings x "
        "the interval between the stream's readings (learnt from the reservoir itself), "
        "whichever is longer -- so hourly meters keep enough readings to train.",
    )
    exclusion_margin: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Seconds around every anomalous window and every alert whose readings "
        "are left out of training. Default: auto, 120 readings x the interval between the "
        "stream's readings (120 s at one reading per second).",
    )
    min_rows: int = Field(
        default=2_000,
        ge=64,
        le=10_000_000,
        description="Clean readings needed for a run; with fewer the run is skipped and the "
        "reason logged.",
    )
    min_new_rows: int = Field(
        default=1_000,
        ge=0,
        le=10_000_000,
        description="Readings (all devices of the stream) that must have reached the "
        "reservoir since the newest one the active model's data held for a scheduled run to "
        "train; fewer: the run is skipped and the reason logged. A cadence in readings: at "
        "one reading a second or a minute every daily run trains, an hourly meter retrains "
        "every ~6 weeks instead of every 24 readings on the same data. A run asked for "
        "(sentinel retrain) always trains. 0: every scheduled run trains.",
    )
    holdout_fraction: float = Field(
        default=0.2,
        ge=0.05,
        le=0.5,
        description="Share of the clean readings held back from training, in time blocks "
        "spread over the reservoir's span (the newest block among them), to compare the "
        "challenger with the active model, add to an accepted one's calibration and seed the "
        "devices' thresholds at a swap.",
    )
    inject_magnitude: float = Field(
        default=4.0,
        gt=0,
        le=100,
        description="Size, in standard deviations of the held-back data, of the synthetic "
        "anomalies (spike, offset, ramp, noise on one feature) injected for the comparison.",
    )
    tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="How much worse than the active model a challenger may be, in detection "
        "minus false-alarm rate and in false-alarm rate, and still be promoted.",
    )
    attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Challengers trained per run, each with the next model seed, until one "
        "is promoted. Training is noisy: one that loses to the active model by chance gets "
        "another try; one trained on poisoned data loses every time. 1 trains once.",
    )
    shadow: float = Field(
        default=0.0,
        ge=0,
        le=30 * 86_400,
        description="Seconds (of the readings' own time) a promoted model scores beside the "
        "active one before it takes over; each device's threshold then starts from its "
        "scores on the windows the active model judged normal. 0 (default) swaps at once; "
        "3600 was measured (docs/BENCHMARKS.md) and its gain is not yet clear. Only for "
        "scheduled promotions with threshold.method = quantile; `models activate` and "
        "`rollback` swap at once.",
    )
    keep_versions: int = Field(
        default=10,
        ge=2,
        le=10_000,
        description="Model versions kept per stream; older ones are deleted (never the "
        "active one or its predecessor).",
    )
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness of the training process, so scoring keeps the CPU first.",
    )
    torch_threads: int = Field(
        default=1, ge=1, le=256, description="Torch threads of the training process."
    )
    control_socket: bool = Field(
        default=True,
        description="Listen on <state_dir>/control.sock for `sentinel retrain`, "
        "`sentinel models activate|rollback` and `sentinel devices reset` (owner-only "
        "permissions), with retraining enabled or not.",
    )

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as err:
                raise ValueError(f"not a crontab expression: {err}") from err
        return value


class HistoryConfig(Section):
    """Per-minute score history (issue #25): each device's windows, max score, threshold
    and verdicts per minute in the score_history table (docs/SQL.md)."""

    enabled: bool = Field(
        default=True,
        description="Record each device's scored windows per minute (windows, anomalous "
        "windows, max score, its threshold, max score/threshold) in the score_history "
        "table, committed with the readings behind them.",
    )
    retention: float = Field(
        default=2_592_000.0,
        ge=3600.0,
        le=315_360_000.0,
        description="Seconds a minute stays in score_history (wall clock, by its start) "
        "before it is pruned; default 30 days. Disk use grows with devices x retention "
        "(docs/BENCHMARKS.md, *Score history*).",
    )
    prune_batch: int = Field(
        default=20_000,
        ge=100,
        le=10_000_000,
        description="Most rows one pruning pass deletes (the writer prunes once a minute, "
        "and again soon while a pass finds a full batch), so a long backlog never holds "
        "the database for long.",
    )


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise."
    )


class FeatureSpec(Section):
    name: str = Field(description="Feature name used in models and alerts.")
    path: str | None = Field(
        default=None,
        description="Dotted path in a JSON payload (e.g. motor.current); defaults to name.",
    )
    level: Literal["auto", "absolute", "relative"] = Field(
        default="auto",
        description=(
            "relative: judge this sensor by its changes within a window, not by its level. "
            "For slow channels whose level wanders with ambient conditions or warm-up "
            "(temperatures): the detector still sees steps, spikes and oscillations on "
            "them, but a slow drift away from the training range is not an anomaly. "
            "absolute: judge its level. auto: relative when its level drifts through the "
            "training data (model.drift_ratio), absolute otherwise."
        ),
    )

    @property
    def key_path(self) -> tuple[str, ...]:
        return tuple((self.path or self.name).split("."))


def _feature(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class StreamConfig(Section):
    name: str = Field(description="Stream name, e.g. pump. Letters, digits, _ . -")
    topic: str = Field(
        description="Topic pattern with one {device} level, e.g. plant/{device}/pump. "
        "MQTT wildcards + and # may appear in other levels."
    )
    features: Annotated[list[FeatureSpec], Field(min_length=1, max_length=256)]
    format: Literal["json", "senml"] = Field(default="json", description="Payload format.")
    timestamp_field: str | None = Field(
        default="ts",
        description='JSON field (dotted path) holding the event time; "" (empty) uses the '
        "arrival time instead.",
    )
    timestamp_unit: Literal["auto", "s", "ms"] = Field(
        default="auto",
        description="Epoch unit of numeric timestamps; auto treats values above 1e11 as "
        "milliseconds. ISO 8601 strings are always accepted.",
    )
    max_devices: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Devices of this stream held in memory at once. A reading of another "
        "device is refused (device_limit, acknowledged) until one goes idle "
        "(ingest.device_idle): a flood of made-up device names cannot exhaust memory. "
        "Raise it for a larger fleet: a held device costs about 1.5 KB before its first "
        "window, about 25 KB after it and about 113 KB once its histories are full at the "
        "defaults (docs/OPERATIONS.md, Resource budget).",
    )

    @field_validator("features", mode="before")
    @classmethod
    def _names_to_specs(cls, value: Any) -> Any:
        return [_feature(v) for v in value] if isinstance(value, list | tuple) else value

    @field_validator("timestamp_field")
    @classmethod
    def _empty_means_arrival_time(cls, value: str | None) -> str | None:
        return value or None  # TOML has no null: "" is how a file says "none"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("topic")
    @classmethod
    def _valid_topic(cls, value: str) -> str:
        levels = value.split("/")
        if levels.count("{device}") != 1:
            raise ValueError("the topic needs exactly one level that is exactly {device}")
        for i, level in enumerate(levels):
            if level == "#" and i != len(levels) - 1:
                raise ValueError("# may only be the last level")
            if level not in ("+", "#", "{device}") and any(c in level for c in "+#{}"):
                raise ValueError(f"invalid topic level {level!r}")
        return value

    @model_validator(mode="after")
    def _unique_features(self) -> StreamConfig:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self

    @property
    def relative_features(self) -> tuple[str, ...]:
        """Features judged by their changes, not their level (``level = "relative"``)."""
        return tuple(f.name for f in self.features if f.level == "relative")

    @property
    def absolute_features(self) -> tuple[str, ...]:
        """Features whose level is judged whatever training shows (``level = "absolute"``)."""
        return tuple(f.name for f in self.features if f.level == "absolute")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def subscription(self) -> str:
        """The MQTT subscription filter for this stream's topic pattern."""
        return self.topic.replace("{device}", "+")


class HealthConfig(Section):
    enabled: bool = Field(
        default=True,
        description="Serve /metrics (Prometheus), /healthz and the REST API over HTTP.",
    )
    bind: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address to listen on. Keep it local unless a firewall guards the port: "
        "/healthz, /metrics and the API's reads have no authentication (reach it with "
        "ssh -L).",
    )
    api: bool = Field(
        default=True,
        description="Serve the REST API under /api/v1 (alerts, devices, models; OpenAPI "
        "document at /api/v1/openapi.json) and the web UI at /ui/. Its write actions need "
        "the api_token credential or SENTINEL_API_TOKEN, and are refused without one.",
    )
    port: int = Field(
        default=9847, ge=0, le=65535, description="TCP port; 0 takes a free one (logged)."
    )
    database_probe_interval: float = Field(
        default=15.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between database reachability probes (SELECT 1), so /healthz "
        "sees an outage even while nothing is being written.",
    )
    metrics_devices: int = Field(
        default=100,
        ge=0,
        le=10_000,
        description="Most devices with series of their own in /metrics (windows, anomalous "
        "windows, latest score and score/threshold): the first this many to have a window "
        'scored since the start. Every other device counts in its stream\'s device="" '
        "series, so the number of series stays bounded; 0: none per device.",
    )


class PublishConfig(Section):
    """Alert events out over MQTT (docs/MQTT.md): an outbox table, drained at least once."""

    enabled: bool = Field(
        default=True,
        description="Publish alert events, availability and (optionally) Home Assistant "
        "discovery on the [mqtt] broker.",
    )
    prefix: str = Field(
        default="sentinel",
        min_length=1,
        max_length=128,
        description="Topic prefix: events on <prefix>/alerts/<stream>/<device>, state on "
        "<prefix>/state/<stream>/<device>, availability on <prefix>/status.",
    )
    qos: Literal[1, 2] = Field(
        default=1, description="QoS of everything published; an event counts as sent on PUBACK."
    )
    update_peak_factor: float = Field(
        default=1.25,
        ge=1.0,
        le=1000.0,
        description="Publish an update when an open alert's peak score has grown by this "
        "factor since its last published event.",
    )
    update_interval: float = Field(
        default=600.0,
        ge=0.0,
        le=604_800.0,
        description="Also publish an update when an open alert has gone on this many seconds "
        "(of event time) since its last published event; 0: never for that reason.",
    )
    retention: float = Field(
        default=604_800.0,
        ge=60.0,
        le=315_360_000.0,
        description="Seconds a published outbox row is kept before it is pruned (each open "
        "alert's latest row is kept until the alert ends).",
    )
    stats: bool = Field(
        default=True,
        description="Publish the daemon's counters as JSON on <prefix>/stats every minute "
        "(readings, drops by reason, queue depths, scoring, alerts, models; not retained).",
    )
    ha_discovery: bool = Field(
        default=False,
        description="Announce Home Assistant entities per stream and device (MQTT "
        "discovery, retained): an alert binary_sensor, a score sensor (score / threshold, "
        "published on <prefix>/score/<stream>/<device> at most every 10 s while it changes; needs "
        "[history] enabled), a severity sensor and, with ha_ack, an acknowledge button.",
    )
    ha_ack: bool = Field(
        default=True,
        description="With ha_discovery: announce an acknowledge button per device and "
        "subscribe to <prefix>/command/<stream>/<device>/ack; an 'ACK' there acknowledges "
        "the device's open alerts as `sentinel alerts ack` does. Anyone allowed to publish "
        "there can acknowledge: restrict the topic in the broker's ACL, or turn this off.",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        min_length=1,
        max_length=128,
        description="Home Assistant's discovery prefix.",
    )

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("a topic prefix without + # NUL and without a leading or trailing /")
        if "" in value.split("/"):
            raise ValueError("empty topic level")
        return value


class RegistryConfig(Section):
    """Where model versions live: this daemon's directory, or NATS shared by many daemons
    (issue #24; docs/ARCHITECTURE.md "One registry for many daemons")."""

    backend: Literal["files", "nats"] = Field(
        default="files",
        description="'files': versions under <state_dir>/models, for this daemon alone. "
        "'nats': model files in a JetStream object store and the active version of each "
        "stream in a key-value bucket, on the [nats] servers, shared by every daemon; "
        "<state_dir>/models is then each daemon's local cache (a start without NATS "
        "uses it). Retraining then runs on one daemon at a time per stream (a lease).",
    )
    models_bucket: str = Field(
        default="sentinel_models", description="Object store bucket holding the model files."
    )
    kv_bucket: str = Field(
        default="sentinel_registry",
        description="Key-value bucket: active version (and its activation history) and "
        "status of every version.",
    )
    lease_bucket: str = Field(
        default="sentinel_leases",
        description="Key-value bucket of retraining leases; its entries expire lease_ttl "
        "after their last renewal.",
    )
    lease_ttl: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a retraining lease lives without renewal: how long a dead "
        "holder blocks retraining of its stream. Renewed every lease_ttl/3. Fixed when the "
        "bucket is created.",
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds one registry request (a key read, a model upload or download) "
        "may take before it counts as NATS being unreachable.",
    )

    @field_validator("models_bucket", "kv_bucket", "lease_bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        return value


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY; otherwise a folder beside the cwd.
    return Path(os.environ.get("STATE_DIRECTORY", "sentinel-state"))


class SentinelConfig(Section):
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Models, the SQLite database and snapshots live here. Default: "
        "$STATE_DIRECTORY (set by systemd) or ./sentinel-state.",
    )
    snapshot_interval: float = Field(
        default=300.0,
        ge=1.0,
        le=86_400.0,
        description="Seconds between saves of what each device has learnt (thresholds, "
        "noise scales, remembered spikes and excursions, relation fits) to "
        "state_dir/thresholds.json, or to the shared database with [cluster] on; it is "
        "saved when the daemon stops too. A crash loses at most this much of that "
        "learning, never a reading or an alert. A save at 1,000 devices is ~22 MB and "
        "~0.25 s of the worker: every minute that is 31 GB a day, a wear an SD card "
        "feels; every 5 minutes, 6 GB (docs/BENCHMARKS.md, 'The worker's snapshot').",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    nats: NatsConfig = Field(default_factory=NatsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    windows: WindowConfig = Field(default_factory=WindowConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    spikes: SpikesConfig = Field(default_factory=SpikesConfig)
    levels: LevelsConfig = Field(default_factory=LevelsConfig)
    stuck: StuckConfig = Field(default_factory=StuckConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    periods: PeriodsConfig = Field(default_factory=PeriodsConfig)
    command_levels: CommandLevelsConfig = Field(default_factory=CommandLevelsConfig)
    relations: RelationsConfig = Field(default_factory=RelationsConfig)
    shifts: ShiftsConfig = Field(default_factory=ShiftsConfig)
    constants: ConstantsConfig = Field(default_factory=ConstantsConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    streams: Annotated[list[StreamConfig], Field(min_length=1)]
    health: HealthConfig = Field(default_factory=HealthConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _streams_distinct(self) -> SentinelConfig:
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError("stream names must be unique")
        topics = [s.subscription for s in self.streams]
        if len(set(topics)) != len(topics):
            raise ValueError("two streams subscribe to the same topic filter")
        return self

    @model_validator(mode="after")
    def _cold_start_fits_window(self) -> SentinelConfig:
        if self.cold_start.readings < 4 * self.windows.length:
            raise ValueError("cold_start.readings must be at least 4x windows.length")
        return self

    @model_validator(mode="after")
    def _score_steps_fit_window(self) -> SentinelConfig:
        if self.model.score_steps > self.windows.length:
            raise ValueError(
                f"model.score_steps ({self.model.score_steps}) must not exceed "
                f"windows.length ({self.windows.length})"
            )
        return self

    @model_validator(mode="after")
    def _horizon_fits_window(self) -> SentinelConfig:
        if self.model.forecast_horizon >= self.windows.length:
            raise ValueError(
                f"model.forecast_horizon ({self.model.forecast_horizon}) must be below "
                f"windows.length ({self.windows.length})"
            )
        return self

    @model_validator(mode="after")
    def _retrain_fits_window(self) -> SentinelConfig:
        if self.retrain.min_rows < 4 * self.windows.length:
            raise ValueError("retrain.min_rows must be at least 4x windows.length")
        if self.retrain.enabled and self.retrain.reservoir_rows < self.retrain.min_rows:
            raise ValueError(
                f"retrain.reservoir_rows ({self.retrain.reservoir_rows}) must be at least "
                f"retrain.min_rows ({self.retrain.min_rows}): every run, the first model's "
                "included, trains on the reservoir, and one that can never hold min_rows "
                "readings would never train"
            )
        return self

    @model_validator(mode="after")
    def _cluster_needs_nats_and_postgres(self) -> SentinelConfig:
        if not self.cluster.enabled:
            return self
        if self.ingest.source != "nats":
            raise ValueError('cluster.enabled needs ingest.source = "nats"')
        if self.nats.consume is not None:
            raise ValueError(
                "cluster.enabled: leave nats.consume unset (it is the static alternative)"
            )
        url = self.database.url
        if url is None or make_url(url).get_backend_name() != "postgresql":
            raise ValueError(
                "cluster.enabled needs database.url on PostgreSQL, which every member shares"
            )
        return self

    @property
    def database_url(self) -> str:
        """The database URL with its password filled in from the secret store."""
        if self.database.url is None:
            return f"sqlite:///{self.state_dir / 'sentinel.db'}"
        url = make_url(self.database.url)
        password = read_secret(DB_PASSWORD_CREDENTIAL, DB_PASSWORD_ENV)
        if password and url.get_backend_name() != "sqlite":
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    def stream(self, name: str) -> StreamConfig:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data, safe to log (no secrets, URL password hidden)."""
        data = self.model_dump(mode="json")
        data["database"]["url"] = make_url(self.database_url).render_as_string(hide_password=True)
        data["mqtt"]["password"] = "***" if self.mqtt.password else None
        data["nats"]["password"] = "***" if self.nats.password else None
        return data

    def warnings(self) -> list[str]:
        """Valid settings that deserve a second look, each led by its key path:
        ``check-config`` prints them and the daemon logs them at start."""
        found = []
        health = self.health
        if health.enabled and not _is_loopback(health.bind):
            found.append(
                f"health.bind: {health.bind!r} is not a loopback address: /healthz, "
                "/metrics and the API's reads have no authentication, so anyone who "
                f"reaches port {health.port} reads them; keep 127.0.0.1 or firewall the port"
            )
        database = self.database
        if database.sqlite_durability != "full" and self.database_url.startswith("sqlite"):
            found.append(
                "database.sqlite_durability: commits are not fsynced before their readings "
                "are acknowledged, so a power cut can lose readings the broker has already "
                'forgotten; keep "full" unless the box has a UPS (docs/OPERATIONS.md)'
            )
        publish = self.publish
        if publish.enabled and publish.ha_discovery and publish.ha_ack and not self.mqtt.username:
            found.append(
                f"publish.ha_ack: the daemon acknowledges alerts on {publish.prefix}/command/"
                "<stream>/<device>/ack from any client of a broker it reaches without a user "
                "name; restrict that topic in the broker's ACL, or set ha_ack = false"
            )
        retrain, cold = self.retrain, self.cold_start
        if retrain.enabled and max(cold.readings, cold.max_readings) > retrain.reservoir_rows:
            found.append(
                f"cold_start.max_readings: the first model trains on the reservoir, which "
                f"holds at most retrain.reservoir_rows ({retrain.reservoir_rows}) readings; "
                "the cold start trains once it holds that many"
            )
        age = retrain.reservoir_age
        if retrain.enabled and age is not None and cold.span > COLD_START_SPAN_OF_AGE * age:
            found.append(
                f"cold_start.span: the reservoir keeps retrain.reservoir_age ({age:g} s) of "
                f"the stream's time; the cold start waits for {COLD_START_SPAN_OF_AGE:g} of "
                f"that, not {cold.span:g} s"
            )
        if self.registry.backend == "nats" and not self.retrain.enabled:
            found.append(
                "registry.backend: with retrain.enabled = false the cold start takes no "
                "retraining lease, so every daemon sharing the registry trains a first model "
                "of its own (the last one activated wins everywhere); keep retraining on, or "
                "train once with `sentinel train`"
            )
        return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it resolves to an interface others can reach


def format_validation_error(err: ValidationError) -> list[str]:
    """One line per problem, each with its key path (``streams.0.topic: ...``)."""
    lines = []
    for problem in err.errors():
        path = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        lines.append(f"{path}: {problem['msg']}")
    return lines


def load_config(path: str | Path) -> SentinelConfig:
    """Read and validate a TOML config file; every problem is listed in the ConfigError."""
    return validate_config(read_config_data(path), path)


def read_config_data(path: str | Path) -> dict[str, Any]:
    """A TOML config file as plain data, not yet validated (``validate_config``)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def validate_config(raw: dict[str, Any], source: str | Path) -> SentinelConfig:
    """Config data (``read_config_data``'s, or built) validated; every problem is listed in
    the ConfigError, which names ``source``."""
    try:
        return SentinelConfig.model_validate(raw)
    except ValidationError as err:
        lines = format_validation_error(err)
        raise ConfigError(f"{source}: {len(lines)} error(s)\n  " + "\n  ".join(lines)) from err


def config_to_toml(data: dict[str, Any]) -> str:
    """Plain config data (as ``load_config`` reads it) back to TOML.

    Enough for Sentinel's shape: top-level scalars, one level of sections, and the
    ``[[streams]]`` array of tables (whose features are strings or inline tables). None
    values are left out, since TOML has no null.
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str | Path):
            return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return (
                "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items() if x is not None) + " }"
            )
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines = [
        f"{k} = {value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, dict) and k != "streams"
    ]
    for key, section in data.items():
        if isinstance(section, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in section.items() if v is not None]
    for stream in data.get("streams", []):
        lines.append("\n[[streams]]")
        lines += [f"{k} = {value(v)}" for k, v in stream.items() if v is not None]
    return "\n".join(lines) + "\n"


def config_hash(config: SentinelConfig) -> str:
    """A stable short hash of the effective config (secrets left out), stored on alerts so
    that an alert says which configuration judged it. Same config, same hash.

    ``cluster.member`` is left out: it names the daemon, not how it judges, so the members
    of a cluster sharing one config record one hash."""
    data = config.redacted()
    cluster = data.get("cluster")
    if isinstance(cluster, dict):
        data["cluster"] = {k: v for k, v in cluster.items() if k != "member"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
