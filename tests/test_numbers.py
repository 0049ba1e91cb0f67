"""core.numbers: the one reader of typed numbers, for settings and command-line options."""

import argparse

import pytest

from core.numbers import as_argument, positive_number, whole_number


@pytest.mark.parametrize(
    ("raw", "options", "expected"),
    [("1", {}, 1), ("0", {"minimum": 0}, 0), ("65535", {"maximum": 65535}, 65535)],
)
def test_whole_numbers_in_range_are_read(raw, options, expected):
    assert whole_number(raw, **options) == expected


@pytest.mark.parametrize(
    ("raw", "options", "message"),
    [
        ("abc", {}, "must be a positive whole number"),
        ("0", {}, "must be a positive whole number"),
        ("1.5", {}, "must be a positive whole number"),
        ("-1", {"minimum": 0}, "must be a whole number from 0"),
        ("65536", {"maximum": 65535}, "must be a whole number from 1 to 65535"),
        ("x", {"what": "a port"}, "must be a port"),
    ],
)
def test_bad_whole_numbers_are_refused_in_our_words(raw, options, message):
    with pytest.raises(ValueError) as caught:
        whole_number(raw, **options)
    assert str(caught.value) == message


@pytest.mark.parametrize("raw", ["0", "-2", "inf", "nan", "soon", "87601"])
def test_bad_positive_numbers_are_refused(raw):
    with pytest.raises(ValueError, match="^must be a "):
        positive_number(raw, maximum=87600)


def test_positive_numbers_are_read_up_to_the_maximum():
    assert positive_number("0.5") == 0.5
    assert positive_number("87600", maximum=87600) == 87600


def test_an_option_names_itself_and_the_value_given(capsys):
    parser = argparse.ArgumentParser(prog="postback lag")
    parser.add_argument("--watch", type=as_argument(positive_number, what="seconds"))
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--watch", "0"])
    assert caught.value.code == 2
    assert "argument --watch: '0': must be seconds" in capsys.readouterr().err
