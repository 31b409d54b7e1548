"""`transform.client_hints` and `transform.width_ladder`: read from the file and the environment,
and checked (non-empty, ascending positive integers, at most `transform.max_width`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgproxy.config import CONNECTION_STRING_ENV, ConfigError, load_config, load_transform_config
from imgproxy.config.sections import DEFAULT_WIDTH_LADDER

CONN = {CONNECTION_STRING_ENV: "x"}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_off_and_the_ten_rung_ladder() -> None:
    """Client hints are off by default; the ladder is 160 to 2560 in ten rungs."""
    transform = load_config(None, CONN).transform
    assert transform.client_hints is False
    assert transform.width_ladder == (160, 320, 480, 640, 800, 1080, 1280, 1600, 1920, 2560)
    assert transform.width_ladder == DEFAULT_WIDTH_LADDER


def test_ladder_from_a_toml_array(tmp_path: Path) -> None:
    """A TOML array of integers is the ladder, as a tuple."""
    path = write_config(tmp_path, "[transform]\nclient_hints = true\nwidth_ladder = [100, 200, 400]\n")
    transform = load_config(path, CONN).transform
    assert (transform.client_hints, transform.width_ladder) == (True, (100, 200, 400))


@pytest.mark.parametrize("text", ["[300, 600, 900]", "300, 600,900", " 300,600 , 900 "])
def test_ladder_from_the_environment_as_json_or_commas(text: str) -> None:
    """`IMGPROXY_TRANSFORM_WIDTH_LADDER` is a JSON array or comma-separated integers."""
    env = {**CONN, "IMGPROXY_TRANSFORM_WIDTH_LADDER": text, "IMGPROXY_TRANSFORM_CLIENT_HINTS": "on"}
    transform = load_config(None, env).transform
    assert (transform.client_hints, transform.width_ladder) == (True, (300, 600, 900))


@pytest.mark.parametrize(
    ("ladder", "fragment"),
    [
        ("[]", "must not be empty"),
        ("[320, 160]", "ascending positive integers"),
        ("[160, 160]", "ascending positive integers"),
        ("[0, 160]", "ascending positive integers"),
        ("[-5, 160]", "ascending positive integers"),
        ("[160, 9000]", "at most transform.max_width (8192)"),
        ('["160"]', "expected an array of integers"),
        ("[160.5]", "expected an array of integers"),
        ("[true]", "expected an array of integers"),
        ('"160"', "expected an array of integers"),
    ],
)
def test_bad_ladders_in_the_file_name_the_key(tmp_path: Path, ladder: str, fragment: str) -> None:
    """Each bad ladder is a ConfigError naming `transform.width_ladder` and what is wrong."""
    path = write_config(tmp_path, f"[transform]\nclient_hints = true\nwidth_ladder = {ladder}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, CONN)
    assert "transform.width_ladder" in str(excinfo.value) and fragment in str(excinfo.value)


@pytest.mark.parametrize("text", ["", "160,,320", "[160, ", "a,b", "[1.5]"])
def test_bad_ladders_in_the_environment_name_the_key(text: str) -> None:
    """A ladder the environment cannot give as integers is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"transform\.width_ladder"):
        load_config(None, {**CONN, "IMGPROXY_TRANSFORM_WIDTH_LADDER": text})


def test_the_top_rung_is_checked_against_a_lower_max_width_with_hints_on(tmp_path: Path) -> None:
    """With hints on, a ladder above a lowered `max_width` is refused (also where only
    `[transform]` is read); with them off the unused default ladder does not stand in the way."""
    path = write_config(tmp_path, "[transform]\nclient_hints = true\nmax_width = 1000\n")
    with pytest.raises(ConfigError, match=r"at most transform\.max_width \(1000\), got 2560"):
        load_transform_config(path, {})
    off = write_config(tmp_path, "[transform]\nmax_width = 1000\n")
    assert load_transform_config(off, {}).width_ladder == DEFAULT_WIDTH_LADDER
    fitted = "[transform]\nclient_hints = true\nmax_width = 1000\nwidth_ladder = [500, 1000]\n"
    assert load_transform_config(write_config(tmp_path, fitted), {}).width_ladder == (500, 1000)
