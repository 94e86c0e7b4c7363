#!/usr/bin/env bash
# Remove the Sentinel service and its program files. Configuration (/etc/sentinel) and
# data (/var/lib/sentinel: models, SQLite database) are kept unless --purge is given.
#
#   sudo deploy/uninstall.sh [--purge]
#
# SENTINEL_ROOT works as for install.sh.
set -euo pipefail

ROOT="${SENTINEL_ROOT:-}"
purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    *) printf 'usage: %s [--purge]\n' "$0" >&2; exit 2 ;;
  esac
done

say() { printf 'sentinel-uninstall: %s\n' "$*"; }

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  printf 'sentinel-uninstall: error: run as root\n' >&2
  exit 1
fi

if [ -z "$ROOT" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now sentinel 2>/dev/null || true
fi
rm -f "$ROOT/etc/systemd/system/sentinel.service"
if [ -z "$ROOT" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
rm -rf "$ROOT/opt/sentinel"
say "removed the service and /opt/sentinel"

if [ "$purge" = 1 ]; then
  rm -rf "$ROOT/etc/sentinel" "$ROOT/var/lib/sentinel"
  if [ -z "$ROOT" ] && id sentinel >/dev/null 2>&1; then
    userdel sentinel
  fi
  say "purged /etc/sentinel, /var/lib/sentinel and the sentinel user"
else
  say "kept /etc/sentinel and /var/lib/sentinel (models, database): --purge removes them"
fi
