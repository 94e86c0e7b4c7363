"""Domain errors, all in one place."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "FatalConnectionError",
    "FencedError",
    "ModelError",
    "RegistryUnavailable",
    "SentinelError",
    "StoreError",
]


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError):
    """The configuration file is missing, unreadable or invalid."""


class FatalConnectionError(SentinelError):
    """The broker refused us for a reason retrying will not fix (credentials, authorization)."""


class ModelError(SentinelError):
    """A model file is missing, corrupt, or does not fit the stream it is used for."""


class RegistryUnavailable(ModelError):
    """The shared model registry (NATS) did not answer in time: readers fall back to their
    local cache, writers (activations, leases) fail and say so."""


class DataError(SentinelError):
    """Recorded input (CSV for training or replay) cannot be used."""


class StoreError(SentinelError):
    """The database cannot be reached or its schema cannot be brought up to date."""


class FencedError(StoreError):
    """A write carried readings of partitions another cluster member has taken since this
    one acquired them (their fencing epoch moved on): the transaction was rolled back."""

    def __init__(self, partitions: frozenset[int]) -> None:
        super().__init__(f"partitions {sorted(partitions)} are owned by another member now")
        self.partitions = partitions
