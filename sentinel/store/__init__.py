"""Alert persistence: SQL schema, migrations, the store and its single writer thread."""

from __future__ import annotations

from sentinel.store.db import AlertRecord, AlertStore, DeviceRecord
from sentinel.store.writer import AlertWriter

__all__ = ["AlertRecord", "AlertStore", "AlertWriter", "DeviceRecord"]
