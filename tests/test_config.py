import pytest

from core.config import DEFAULT_RETRY_SCHEDULE, ConfigError, Settings


def test_defaults_match_the_spec():
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.admin_token is None
    assert s.port == 8080
    assert s.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert s.forward_timeout == 10
    assert s.claim_idle_ms == 60000
    assert s.log_retention_days == 30
    assert s.trusted_proxies == ()


def test_values_are_parsed():
    s = Settings.from_env(
        {
            "PORT": "9000",
            "POSTBACK_RETRY_SCHEDULE": "1,2,3",
            "POSTBACK_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        }
    )
    assert s.port == 9000
    assert s.retry_schedule == (1, 2, 3)
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("POSTBACK_RETRY_SCHEDULE", "30,x"),
        ("REDIS_URL", "http://x"),
        ("POSTBACK_FORWARD_TIMEOUT", "0"),
        ("POSTBACK_TRUSTED_PROXIES", "not-an-ip"),
    ],
)
def test_a_bad_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("POSTBACK_PARTITIONS", "abc", "must be a positive whole number"),
        ("PORT", "x", "must be a port number from 1 to 65535"),
        ("POSTBACK_FORWARD_TIMEOUT", "soon", "must be a positive number, e.g. 2.5"),
        ("POSTBACK_LOG_RETENTION_DAYS", "inf", "must be a positive number, e.g. 2.5"),
        ("POSTBACK_LEASE_MS", "1.5", "must be a positive whole number"),
    ],
)
def test_a_bad_value_is_answered_in_our_words_not_pythons(name, value, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message == f"{name}={value!r}: {expected}"
    assert "invalid literal" not in message and "could not convert" not in message
