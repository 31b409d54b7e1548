"""`python -m imgproxy sign PATH PARAMS`: the key's sources, the output, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.azurite import ROOT
from imgproxy.__main__ import main
from imgproxy.transform.signing import sign_url

KEY_ENV = "IMGPROXY_TRANSFORM_SIGNING_KEY"


def run_sign(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`main(["sign", *argv])`: exit status, stdout, stderr."""
    status = main(["sign", *argv])
    captured = capsys.readouterr()
    return status, captured.out.strip(), captured.err


def test_prints_the_signed_path_and_query(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --key, the output is exactly sign_url("", PATH, PARAMS, key)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    status, out, _ = run_sign(capsys, "photos/my cat.jpg", "w=300&fm=webp", "--key", "k1")
    assert status == 0
    assert out == sign_url("", "photos/my cat.jpg", "w=300&fm=webp", "k1")
    assert out.startswith("/images/photos/my%20cat.jpg?w=300&fm=webp&s=")


def test_key_from_the_environment_then_the_config_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--key beats IMGPROXY_TRANSFORM_SIGNING_KEY, which beats transform.signing_key of --config."""
    config = tmp_path / "config.toml"
    config.write_text('[transform]\nsigning_key = "from-file"\n', encoding="utf-8")
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert run_sign(capsys, "a.jpg", "w=1", "--config", str(config))[1] == sign_url(
        "", "a.jpg", "w=1", "from-file"
    )
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert run_sign(capsys, "a.jpg", "w=1", "--config", str(config))[1] == sign_url(
        "", "a.jpg", "w=1", "from-env"
    )
    assert run_sign(capsys, "a.jpg", "w=1", "--key", "cli")[1] == sign_url("", "a.jpg", "w=1", "cli")


def test_no_key_is_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any key the command says so and exits 2."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    status, out, err = run_sign(capsys, "a.jpg", "w=1")
    assert (status, out) == (2, "") and "no key" in err


def test_a_bad_value_is_not_signed(capsys: pytest.CaptureFixture[str]) -> None:
    """A value the server would refuse is reported naming the parameter and echoing what was
    given (the operator's own input), exit 2."""
    status, out, err = run_sign(capsys, "a.jpg", "w=0&fm=webp", "--key", "k")
    assert (status, out) == (2, "") and "w:" in err and "'w=0&fm=webp'" in err


def test_base_is_put_before_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    """--base gives a full URL."""
    out = run_sign(capsys, "a.jpg", "w=1", "--key", "k", "--base", "https://img.example.com")[1]
    assert out.startswith("https://img.example.com/images/a.jpg?w=1&s=")


def test_the_module_runs_it_without_a_server() -> None:
    """`python -m imgproxy sign` works in a fresh process with the key in the environment."""
    env = {**os.environ, KEY_ENV: "env-key"}
    done = subprocess.run(
        [sys.executable, "-m", "imgproxy", "sign", "x/y.png", "h=50"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == sign_url("", "x/y.png", "h=50", "env-key")
