"""``postback admin``: every subcommand, its --json shape, and one-line errors."""

from __future__ import annotations

import socket

import orjson
import pytest

from core.sources import Source


def as_json(out: str) -> dict:
    return orjson.loads(out)


def test_source_add_prints_a_fresh_random_key(admin, store):
    code, out, _ = admin("source", "add", "--name", "Survey wall")
    key = out.strip()
    assert code == 0
    assert len(key) >= 16
    assert store.get_source(key).name == "Survey wall"
    code, out2, _ = admin("source", "add", "--name", "Other")
    assert out2.strip() != key


def test_source_add_json_with_key_and_allow_list(admin, store):
    code, out, _ = admin(
        "source",
        "add",
        "--name",
        "W",
        "--key",
        "abc123xyz-0123456789",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-ip",
        "192.0.2.7",
        "--json",
    )
    data = as_json(out)
    assert code == 0
    assert data["key"] == "abc123xyz-0123456789"
    assert data["allow"] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert data["active"] is True


def test_offer_add_and_list(admin):
    assert (
        admin(
            "offer", "add", "VBFS6", "--revshare", "80", "--url", "https://o.example/?c={click_id}"
        )[0]
        == 0
    )
    assert (
        admin("offer", "add", "FIX", "--fixed", "50", "--currency", "eur", "--window-days", "7")[0]
        == 0
    )
    code, out, _ = admin("offer", "list", "--json")
    offers = {o["offer_id"]: o for o in as_json(out)["offers"]}
    assert offers["VBFS6"]["revshare"] == "80"
    assert offers["FIX"]["fixed"] == "50.00"
    assert offers["FIX"]["currency"] == "EUR"
    assert offers["FIX"]["window_days"] == 7
    code, out, _ = admin("offer", "list")
    assert "VBFS6" in out and "FIX" in out


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("offer", "add", "O1", "--revshare", "120"), "revshare"),
        (("offer", "add", "O1", "--fixed", "-5"), "fixed"),
        (("offer", "add", "O1", "--fixed", "5", "--currency", "DOLLARS"), "currency"),
        (("offer", "add", "O1", "--fixed", "5", "--url", "ftp://x"), "url"),
        (("offer", "add", "O1", "--fixed", "5", "--window-days", "0"), "window_days"),
        (("partner", "add", "p1", "--url", "not a url"), "url"),
        (("partner", "add", "p1", "--url", "http://127.0.0.1/x"), "url"),
        (("partner", "add", "p1", "--url", "http://10.1.2.3/x"), "url"),
        (("partner", "add", "p1", "--url", "http://169.254.169.254/x"), "url"),
        (("partner", "add", "p1", "--url", "https://p.example/x", "--email", "nope"), "email"),
        (("click", "add", "--offer", "NOPE", "--partner", "p", "--user", "u"), "offer"),
        (("source", "add", "--name", "x", "--allow-ip", "999.1.1.1"), "allow_ip"),
        (("source", "add", "--name", "x", "--key", "short"), "key"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line_naming_the_problem(admin, argv, field):
    code, out, err = admin(*argv)
    assert code != 0
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert field in err


def test_both_payout_models_at_once_is_refused_by_the_parser(admin):
    code, out, err = admin("offer", "add", "O1", "--revshare", "5", "--fixed", "5")
    assert code == 2 and out == ""
    assert "not allowed with argument" in err


def test_partner_add_allow_private_and_duplicate(admin):
    code, out, _ = admin(
        "partner",
        "add",
        "pub1",
        "--url",
        "http://127.0.0.1:9/pb",
        "--allow-private",
        "--method",
        "post",
        "--scope",
        "all",
        "--secret",
        "s3",
        "--email",
        "a@b.example",
        "--json",
    )
    data = as_json(out)
    assert code == 0
    assert (data["method"], data["scope"], data["has_secret"]) == ("POST", "all", True)
    assert "secret" not in data
    code, _, err = admin(
        "partner", "add", "pub1", "--url", "http://127.0.0.1:9/pb", "--allow-private"
    )
    assert code == 1 and "already exists" in err


def test_click_add_prints_click_id_and_records_it(admin, store):
    admin("offer", "add", "VBFS6", "--revshare", "80")
    admin("partner", "add", "pub1", "--url", "https://pub.example/pb")
    code, out, _ = admin(
        "click", "add", "--offer", "VBFS6", "--partner", "pub1", "--user", "u1", "--sub1", "s-one"
    )
    click = store.get_click(out.strip())
    assert (click.offer_id, click.partner_id, click.user_id, click.subs) == (
        "VBFS6",
        "pub1",
        "u1",
        {"sub1": "s-one"},
    )
    code, out, _ = admin(
        "click",
        "add",
        "--offer",
        "VBFS6",
        "--partner",
        "pub1",
        "--user",
        "u1",
        "--click-id",
        "CLK-789ABC",
        "--json",
    )
    assert as_json(out)["click_id"] == "CLK-789ABC"
    code, _, err = admin("click", "add", "--offer", "VBFS6", "--partner", "nobody", "--user", "u1")
    assert code == 1 and "partner" in err


def test_deactivate_and_activate_take_effect_at_once(admin, store):
    key = admin("source", "add", "--name", "W")[1].strip()
    assert admin("source", "deactivate", key)[0] == 0
    assert store.get_source(key).active is False
    assert admin("source", "activate", key)[0] == 0
    assert store.get_source(key).active is True
    admin("offer", "add", "O1", "--fixed", "1")
    code, out, _ = admin("offer", "deactivate", "O1", "--json")
    assert as_json(out)["active"] is False
    code, _, err = admin("partner", "deactivate", "ghost")
    assert code == 1 and "ghost" in err


def test_user_show_prints_points_with_two_decimals(admin, store, keys):
    store.r.hincrby(keys.points(0), "u1", 400)
    assert admin("user", "show", "u1")[1].strip() == "4.00 points"
    assert as_json(admin("user", "show", "u1", "--json")[1]) == {
        "user_id": "u1",
        "points": "4.00",
        "held": "0.00",
    }
    assert as_json(admin("user", "show", "nobody", "--json")[1]) == {
        "user_id": "nobody",
        "points": "0.00",
        "held": "0.00",
    }


def test_conversion_show_unknown_is_one_line(admin):
    code, out, err = admin("conversion", "show", "cv0-0000")
    assert code == 1 and "cv0-0000" in err and out == ""


def test_redis_unreachable_is_one_line(admin, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    code, _, err = admin("user", "show", "u1")
    assert code == 1
    assert "Redis unreachable" in err and len(err.strip().splitlines()) == 1


def test_bad_configuration_is_one_line(admin, monkeypatch):
    monkeypatch.setenv("POSTBACK_RETRY_SCHEDULE", "30,soon")
    code, _, err = admin("user", "show", "u1")
    assert code == 1 and "POSTBACK_RETRY_SCHEDULE" in err


def test_conversion_show_names_the_source_and_hides_its_key(admin, store, keys):
    source = store.add_source(Source.build(name="Survey wall"))
    store.r.hset(
        keys.conversion(0, "cv0-abc"),
        mapping={"conversion_id": "cv0-abc", "source": source.key, "status": "approved"},
    )
    code, out, _ = admin("conversion", "show", "cv0-abc")
    assert code == 0 and source.key not in out
    assert "Survey wall" in out and source.key[-4:] in out
    shown = as_json(admin("conversion", "show", "cv0-abc", "--json")[1])
    assert shown["source"] == "Survey wall" and shown["source_key"] == "…" + source.key[-4:]


def test_partner_add_refuses_a_name_resolving_to_a_private_address(admin, monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    code, out, err = admin("partner", "add", "p1", "--url", "https://rebind.example/pb")
    assert code != 0 and out == ""
    assert err.startswith("postback admin: url: rebind.example is a loopback, private")


def test_a_generated_key_never_looks_like_an_option(monkeypatch):
    from core import sources

    drawn = iter(["-starts-with-a-dash-xyzw", "Ok-key_starting-with-O01"])
    monkeypatch.setattr(sources.secrets, "token_urlsafe", lambda n: next(drawn))
    assert sources.new_source_key() == "Ok-key_starting-with-O01"


def test_a_source_has_no_signing_secret(admin):
    code, out, err = admin("source", "add", "--name", "W", "--secret", "s")
    assert code == 2 and out == "" and "unrecognized arguments: --secret" in err
    code, out, _ = admin("source", "add", "--name", "W", "--json")
    assert code == 0 and "secret" not in out  # nor has_secret: only partners sign
