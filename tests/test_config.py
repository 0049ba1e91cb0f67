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
