from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.cli.main import main
from sentinel.config import SentinelConfig, config_hash, load_config
from sentinel.errors import ConfigError

MINIMAL = """
[[streams]]
name = "pump"
topic = "plant/{device}/pump"
features = ["flow", { name = "current", path = "motor.current" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sentinel.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_sane_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    stream = config.streams[0]
    assert stream.subscription == "plant/+/pump"
    assert stream.feature_names == ("flow", "current")
    assert stream.features[1].key_path == ("motor", "current")
    assert config.mqtt.qos == 1
    assert config.model.torch_threads == 1
    assert config.database_url.startswith("sqlite:///")
    assert config.spikes.enabled
    assert config.spikes.k == 10.0
    assert not config.levels.enabled  # limits from training alone: opt in (see its help)
    assert config.stuck.enabled
    assert (config.stuck.min_run, config.stuck.factor) == (8, 3.0)


def test_spike_warmup_must_fit_its_history(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warmup must not exceed history"):
        load_config(write(tmp_path, "[spikes]\nhistory = 100\nwarmup = 500\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"spikes\.k"):
        load_config(write(tmp_path, "[spikes]\nk = 0\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"levels\.k"):
        load_config(write(tmp_path, "[levels]\nk = -1\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"stuck\.factor"):
        load_config(write(tmp_path, "[stuck]\nfactor = 0.5\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"stuck\.min_run"):
        load_config(write(tmp_path, "[stuck]\nmin_run = 1\n" + MINIMAL))


def test_every_error_is_listed_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
bogus = 1
[mqtt]
port = 70000
[[streams]]
name = "bad name"
topic = "plant/+/pump"
features = []
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for fragment in (
        "bogus",
        "mqtt.port",
        "streams.0.name",
        "streams.0.topic",
        "streams.0.features",
    ):
        assert fragment in message


def test_password_in_database_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql://u:secret@db/x"\n' + MINIMAL)
    with pytest.raises(ConfigError, match="SENTINEL_DB_PASSWORD"):
        load_config(path)


def test_secrets_come_from_credentials_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql+psycopg://sentinel@db/x"\n' + MINIMAL)
    monkeypatch.setenv("SENTINEL_DB_PASSWORD", "from-env")
    monkeypatch.setenv("SENTINEL_MQTT_PASSWORD", "mqtt-env")
    config = load_config(path)
    assert "from-env" in config.database_url
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "db_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert "from-credential" in config.database_url
    redacted = config.redacted()
    assert "from-credential" not in str(redacted)
    assert "mqtt-env" not in str(redacted)
    assert redacted["mqtt"]["password"] == "***"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write(tmp_path, MINIMAL))]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, "[[streams]]\nname='x'\n"))]) == 1
    err = capsys.readouterr().err
    assert "streams.0.topic" in err
    assert "streams.0.features" in err


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.20", "edge01.plant"])
def test_check_config_warns_of_health_endpoints_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bind: str
) -> None:
    """/healthz and /metrics have no authentication: a valid but exposed bind still passes,
    with a warning that says why and what to do."""
    path = write(tmp_path, f'[health]\nbind = "{bind}"\nport = 9999\n' + MINIMAL)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "OK" in out.out
    assert f"warning: health.bind: {bind!r} is not a loopback address" in out.err
    assert "no authentication" in out.err
    assert "9999" in out.err  # the port to firewall


@pytest.mark.parametrize(
    "health", ['bind = "127.0.0.1"', 'bind = "localhost"', 'bind = "::1"', "enabled = false"]
)
def test_check_config_is_quiet_about_local_health_endpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], health: str
) -> None:
    assert main(["check-config", str(write(tmp_path, f"[health]\n{health}\n" + MINIMAL))]) == 0
    assert capsys.readouterr().err == ""
    # An exposed address with the endpoints off exposes nothing.
    config = load_config(write(tmp_path, '[health]\nenabled = false\nbind = "0.0.0.0"\n' + MINIMAL))
    assert config.warnings() == []


def test_check_config_warns_of_sqlite_commits_without_fsync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unsafe = '[database]\nsqlite_durability = "unsafe-on-power-loss"\n'
    assert main(["check-config", str(write(tmp_path, unsafe + MINIMAL))]) == 0
    assert "database.sqlite_durability" in capsys.readouterr().err
    # PostgreSQL ignores the key: nothing to warn of.
    postgres = unsafe + 'url = "postgresql+psycopg://sentinel@db/sentinel"\n'
    assert load_config(write(tmp_path, postgres + MINIMAL)).warnings() == []
    assert load_config(write(tmp_path, MINIMAL)).warnings() == []


def test_check_config_warns_of_an_acknowledge_button_anyone_can_press(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    button = "[publish]\nha_discovery = true\n"
    assert main(["check-config", str(write(tmp_path, button + MINIMAL))]) == 0
    assert "publish.ha_ack" in capsys.readouterr().err
    # A broker user (which the ACL can restrict), or no button: nothing to warn of.
    user = '[mqtt]\nusername = "sentinel"\n'
    assert load_config(write(tmp_path, user + button + MINIMAL)).warnings() == []
    off = "[publish]\nha_discovery = true\nha_ack = false\n"
    assert load_config(write(tmp_path, off + MINIMAL)).warnings() == []


def test_duplicate_streams_and_bad_windows_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_config(write(tmp_path, MINIMAL + MINIMAL))
    with pytest.raises(ConfigError, match="hop"):
        load_config(write(tmp_path, "[windows]\nlength = 8\nhop = 9\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"model.score_steps \(40\) must not exceed"):
        load_config(write(tmp_path, "[model]\nscore_steps = 40\n" + MINIMAL))
    with pytest.raises(ConfigError, match=r"model.forecast_horizon \(32\) must be below"):
        load_config(write(tmp_path, "[model]\nforecast_horizon = 32\n" + MINIMAL))
    assert (
        load_config(
            write(tmp_path, "[model]\nforecast_horizon = 8\n" + MINIMAL)
        ).model.forecast_horizon
        == 8
    )


def test_empty_timestamp_field_means_arrival_time(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + 'timestamp_field = ""\n'))
    assert config.streams[0].timestamp_field is None


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "sentinel.example.toml"
    config = load_config(example)
    assert config.streams[0].features[2].key_path == ("motor", "current")


def test_config_to_toml_round_trips(tmp_path: Path) -> None:
    import tomllib

    from sentinel.config import config_to_toml

    data = {
        "state_dir": str(tmp_path / 'a "quoted" dir'),
        "mqtt": {"host": "broker", "port": 8883, "username": None, "tls": None},
        "threshold": {"multiplier": 1.25},
        "streams": [
            {
                "name": "pump",
                "topic": "plant/{device}/pump",
                "features": ["flow", {"name": "current", "path": "motor.current"}],
            }
        ],
    }
    text = config_to_toml(data)
    back = tomllib.loads(text)
    assert back["state_dir"] == data["state_dir"]
    assert back["mqtt"] == {"host": "broker", "port": 8883}
    assert back["streams"][0]["features"][1] == {"name": "current", "path": "motor.current"}
    assert load_config(write(tmp_path, text)).threshold.multiplier == 1.25


def test_feature_level_defaults_to_auto_and_explicit_levels_are_listed(tmp_path: Path) -> None:
    stream = load_config(write(tmp_path, MINIMAL)).streams[0]
    assert stream.relative_features == ()
    assert stream.absolute_features == ()  # auto: training decides (model.drift_ratio)
    assert {f.level for f in stream.features} == {"auto"}
    text = MINIMAL.replace('"flow",', '{ name = "flow", level = "relative" },')
    assert load_config(write(tmp_path, text)).streams[0].relative_features == ("flow",)
    text = MINIMAL.replace('"flow",', '{ name = "flow", level = "absolute" },')
    assert load_config(write(tmp_path, text)).streams[0].absolute_features == ("flow",)
    with pytest.raises(ConfigError, match="level"):
        load_config(write(tmp_path, MINIMAL.replace('"flow",', '{ name = "flow", level = "x" },')))


CLUSTER_OK = """
[ingest]
source = "nats"

[database]
url = "postgresql+psycopg://sentinel@db/sentinel"

[cluster]
enabled = true
member = "box-1"
"""


def test_cluster_on_nats_and_postgresql_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CLUSTER_OK + MINIMAL))
    assert config.cluster.enabled
    assert config.cluster.member == "box-1"
    assert config.cluster.group is None  # the [nats] consumer_prefix then


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('source = "nats"', 'source = "mqtt"'), "ingest.source"),
        (("postgresql+psycopg://sentinel@db/sentinel", "sqlite:///x.db"), "PostgreSQL"),
        (("[cluster]", "[nats]\nconsume = [0]\n\n[cluster]"), "consume"),
    ],
)
def test_cluster_refuses_what_it_cannot_share(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = CLUSTER_OK.replace(*change) + MINIMAL
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_shared_registry_without_retraining_is_warned_about() -> None:
    base = {"streams": [{"name": "pump", "topic": "p/{device}", "features": ["a"]}]}
    shared = SentinelConfig.model_validate(
        {**base, "registry": {"backend": "nats"}, "retrain": {"enabled": False}}
    )
    [warning] = [w for w in shared.warnings() if w.startswith("registry.backend")]
    assert "lease" in warning
    assert not SentinelConfig.model_validate({**base, "registry": {"backend": "nats"}}).warnings()
    assert SentinelConfig.model_validate(base).registry.backend == "files"


def test_the_config_hash_leaves_out_the_member_name_and_nothing_else() -> None:
    """Members of one cluster share a config but not a name: their alerts record one hash;
    any setting that changes how readings are judged changes it."""
    stream = {"name": "s", "topic": "t/{device}", "features": ["x"]}

    def make(**cluster: object) -> SentinelConfig:
        return SentinelConfig.model_validate({"streams": [stream], "cluster": cluster})

    assert config_hash(make(member="d1")) == config_hash(make(member="d2"))
    assert config_hash(make(member="d1")) != config_hash(make(member="d1", interval=2.0))


def test_a_reservoir_too_small_for_a_run_is_refused_and_one_short_of_the_cold_start_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every run trains on the reservoir: one that never holds min_rows never trains.
    small = "[retrain]\nreservoir_rows = 1000\n"
    with pytest.raises(ConfigError, match=r"reservoir_rows \(1000\) must be at least .*2000"):
        load_config(write(tmp_path, small + MINIMAL))
    assert load_config(write(tmp_path, small + "enabled = false\n" + MINIMAL)).warnings() == []
    # Valid, but the cold start then trains on what the reservoir can hold: say so.
    short = "[retrain]\nreservoir_rows = 20000\nreservoir_age = 1800.0\n"
    assert main(["check-config", str(write(tmp_path, short + MINIMAL))]) == 0
    err = capsys.readouterr().err
    assert "cold_start.max_readings" in err
    assert "retrain.reservoir_rows (20000)" in err
    assert "waits for 0.9 of that, not 3600 s" in err
