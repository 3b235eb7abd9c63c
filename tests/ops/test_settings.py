"""Settings come from CANBAO_* and DATABASE_URL; a bad value names its variable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.config import Settings, SettingsError


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.embedded
    assert settings.data_dir == ".canbao"
    assert settings.access_token_ttl_s == 900


def test_the_owner_database_and_the_metrics_listener_are_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://canbao_app@h/db",
            "CANBAO_OWNER_DATABASE_URL": "postgresql://canbao_owner@h/db",
            "CANBAO_METRICS_PORT": "0",
            "CANBAO_PROGRESS": "1",  # the command line's, not the server's: allowed, ignored
        }
    )
    assert settings.owner_database_url == "postgresql://canbao_owner@h/db"
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 0)
    assert (Settings.from_env({}).metrics_host, Settings.from_env({}).metrics_port) == ("127.0.0.1", 9464)


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@h/db", "CANBAO_ACCESS_TOKEN_TTL_S": "60", "CANBAO_DATA_DIR": "/srv/canbao"}
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.access_token_ttl_s == 60
    assert settings.data_dir == "/srv/canbao"
    assert not settings.embedded


def test_the_business_clock_is_an_instant_with_its_offset() -> None:
    assert Settings.from_env({}).business_clock is None
    pinned = Settings.from_env({"CANBAO_BUSINESS_CLOCK": "2026-12-02T10:00:00+08:00"}).business_clock
    assert pinned == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CANBAO_ACCESS_TOKEN_TTL_S": "abc"}, "CANBAO_ACCESS_TOKEN_TTL_S"),
        ({"CANBAO_ACCESS_TOKEN_TTL_S": "5"}, "CANBAO_ACCESS_TOKEN_TTL_S"),
        ({"CANBAO_POOL_MAX_SIZE": "0"}, "CANBAO_POOL_MAX_SIZE"),
        ({"CANBAO_LOG_LEVEL": "loud"}, "CANBAO_LOG_LEVEL"),
        ({"CANBAO_TIMEZONE": "Mars/Olympus"}, "CANBAO_TIMEZONE"),
        ({"CANBAO_JWT_SECRET": "short"}, "CANBAO_JWT_SECRET"),
        ({"CANBAO_NO_SUCH_THING": "1"}, "CANBAO_NO_SUCH_THING"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"CANBAO_POOL_MIN_SIZE": "9", "CANBAO_POOL_MAX_SIZE": "2"}, "CANBAO_POOL_MIN_SIZE"),
        (
            {"CANBAO_REPLICA_DSNS": "postgresql://s/db", "CANBAO_REPLICA_STATEMENT_TIMEOUT_S": "60"},
            "CANBAO_REPLICA_STATEMENT_TIMEOUT_S",
        ),
        ({"CANBAO_OWNER_DATABASE_URL": "postgresql://owner@h/db"}, "CANBAO_OWNER_DATABASE_URL"),  # embedded
        ({"DATABASE_URL": "postgresql://app@h/db", "CANBAO_OWNER_DATABASE_URL": "x"}, "CANBAO_OWNER_DATABASE_URL"),
        ({"CANBAO_METRICS_PORT": "70000"}, "CANBAO_METRICS_PORT"),
        ({"CANBAO_BUSINESS_CLOCK": "tomorrow"}, "CANBAO_BUSINESS_CLOCK"),
        ({"CANBAO_BUSINESS_CLOCK": "2026-12-02T10:00:00"}, "CANBAO_BUSINESS_CLOCK"),  # no offset: whose 10:00?
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable + ":")
