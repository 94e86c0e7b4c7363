#!/usr/bin/env bash
# Install or upgrade Sentinel as a systemd service. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh            # from a checkout or an unpacked release
#
# What it does:
#   * a system user `sentinel` (no login, no home)
#   * a virtual environment in /opt/sentinel/venv with Sentinel installed into it
#     - torch is never replaced: if the Python that builds the venv already has torch
#       (a Jetson's JetPack build from NVIDIA), the venv is made with
#       --system-site-packages so it uses that one; otherwise $SENTINEL_TORCH_SPEC is
#       installed (default torch==2.13.0; set PIP_INDEX_URL for a CPU-only index)
#   * /etc/sentinel/sentinel.toml from deploy/sentinel.example.toml (never overwritten)
#     and /etc/sentinel/credentials/ (0700) for mqtt_password, db_password, api_token and the
#     NATS ones
#   * /etc/systemd/system/sentinel.service, then enable and (re)start it
#   * on an upgrade, database migrations run before the new version starts
#
# Environment:
#   SENTINEL_ROOT        install under this directory instead of / (tests, image builds);
#                        no user is created and systemctl is not called
#   SENTINEL_PYTHON      Python 3.11+ to build the venv with (default: python3)
#   SENTINEL_TORCH_SPEC  what to pip-install when no torch is found (default torch==2.13.0)
#   SENTINEL_PIP_ARGS    extra arguments for pip install (e.g. --no-build-isolation)
#   SENTINEL_NO_START    1: install and enable, but do not (re)start the service
set -euo pipefail

ROOT="${SENTINEL_ROOT:-}"
PYTHON="${SENTINEL_PYTHON:-python3}"
TORCH_SPEC="${SENTINEL_TORCH_SPEC:-torch==2.13.0}"
read -r -a PIP_ARGS <<< "${SENTINEL_PIP_ARGS:-}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PREFIX="$ROOT/opt/sentinel"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/sentinel"
STATE="$ROOT/var/lib/sentinel"
UNIT_DIR="$ROOT/etc/systemd/system"
USER_NAME=sentinel

say() { printf 'sentinel-install: %s\n' "$*"; }
die() { printf 'sentinel-install: error: %s\n' "$*" >&2; exit 1; }

use_systemctl() {
  [ -z "$ROOT" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]
}

[ -f "$SRC/pyproject.toml" ] || die "run me from a Sentinel checkout ($SRC has no pyproject.toml)"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (or set SENTINEL_ROOT to install under a directory)"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is older than 3.11"

# -- user ------------------------------------------------------------------------------------
if [ -z "$ROOT" ]; then
  if ! id "$USER_NAME" >/dev/null 2>&1; then
    say "creating system user $USER_NAME"
    useradd --system --no-create-home --home-dir /var/lib/sentinel \
      --shell /usr/sbin/nologin "$USER_NAME"
  fi
  # Jetson (L4T) grants the GPU's device nodes to `video`: CUDA needs the membership.
  if getent group video >/dev/null && ! id -nG "$USER_NAME" | grep -qw video; then
    usermod -aG video "$USER_NAME"
  fi
fi

# -- venv ------------------------------------------------------------------------------------
upgrade=0
[ -x "$VENV/bin/sentinel" ] && upgrade=1
mkdir -p "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    # Keep the platform's torch (NVIDIA's JetPack wheel on a Jetson): see it from the venv.
    say "torch found in $PYTHON ($("$PYTHON" -c 'import torch; print(torch.__version__)')):" \
      "the venv will use it"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
if "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  say "keeping torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  say "installing $TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet "${PIP_ARGS[@]}" "$TORCH_SPEC"
fi
# Sentinel does not depend on torch (see pyproject.toml), so this never touches it.
say "installing sentinel from $SRC"
"$VENV/bin/python" -m pip install --quiet "${PIP_ARGS[@]}" "$SRC"
mkdir -p "$PREFIX/docs"
cp "$SRC"/docs/*.md "$PREFIX/docs/"

# -- config ----------------------------------------------------------------------------------
mkdir -p "$ETC/credentials"
chmod 0755 "$ETC"
chmod 0700 "$ETC/credentials"
if [ ! -f "$ETC/sentinel.toml" ]; then
  say "writing $ETC/sentinel.toml from the example: edit it, then systemctl restart sentinel"
  install -m 0644 "$SRC/deploy/sentinel.example.toml" "$ETC/sentinel.toml"
else
  say "keeping $ETC/sentinel.toml"
fi
install -m 0644 "$SRC/deploy/sentinel.example.toml" "$ETC/sentinel.example.toml"
"$VENV/bin/sentinel" check-config "$ETC/sentinel.toml" \
  || die "$ETC/sentinel.toml does not validate: fix it and run me again"

# -- unit ------------------------------------------------------------------------------------
mkdir -p "$UNIT_DIR" "$STATE"
install -m 0644 "$SRC/deploy/sentinel.service" "$UNIT_DIR/sentinel.service"
if [ -z "$ROOT" ]; then
  chown "$USER_NAME:$USER_NAME" "$STATE"
  chmod 0750 "$STATE"
fi

# -- migrate, enable, start -------------------------------------------------------------------
if [ "$upgrade" = 1 ]; then
  if use_systemctl && systemctl is-active --quiet sentinel; then
    say "stopping sentinel for the upgrade"
    systemctl stop sentinel
  fi
  say "migrating the database"
  # With the service's state directory and credentials, as the service will see them.
  STATE_DIRECTORY="$STATE" CREDENTIALS_DIRECTORY="$ETC/credentials" \
    "$VENV/bin/sentinel" migrate --config "$ETC/sentinel.toml"
  # A SQLite file touched by root must stay the service's own.
  [ -z "$ROOT" ] && chown -R "$USER_NAME:$USER_NAME" "$STATE"
fi
if use_systemctl; then
  systemctl daemon-reload
  systemctl enable sentinel >/dev/null
  if [ "${SENTINEL_NO_START:-0}" != 1 ]; then
    systemctl restart sentinel
    say "started: systemctl status sentinel; journalctl -u sentinel -f"
  fi
else
  say "systemctl not used here: enable and start sentinel.service on the target"
fi
say "done ($([ "$upgrade" = 1 ] && echo upgrade || echo fresh install))"
