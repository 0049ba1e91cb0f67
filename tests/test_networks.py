"""One network parser: a setting, an admin's allow-list and a stored allow-list agree."""

from __future__ import annotations

import pytest

from core.config import ConfigError, Settings
from core.validation import ValidationError, check_networks
from edge.client_ip import parse_allow


def test_every_caller_names_the_bad_entry_the_same_way():
    with pytest.raises(ConfigError) as setting:
        Settings.from_env({"POSTBACK_TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.300"})
    with pytest.raises(ValidationError) as admin:
        check_networks(["10.0.0.0/8", "10.0.0.300"])
    assert "'10.0.0.300' is not an IP address or CIDR" in str(setting.value)
    assert str(admin.value) == "allow_ip: '10.0.0.300' is not an IP address or CIDR"


def test_the_same_text_gives_the_same_networks_everywhere():
    text = "10.1.2.3/8, 2001:db8::1"
    trusted = Settings.from_env({"POSTBACK_TRUSTED_PROXIES": text}).trusted_proxies
    assert trusted == parse_allow(text)
    assert check_networks(text.split(",")) == [str(n) for n in trusted]
    # a stored list (validated when written) that holds a bad part only narrows it
    assert parse_allow("10.0.0.0/8,bad") == parse_allow("10.0.0.0/8")
