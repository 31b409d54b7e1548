"""`deploy/nginx-replicas.conf` is a configuration nginx accepts, as shipped and as the bench renders it.

Runs `nginx -t` (Debian's nginx, which `make bench` installs with apt-get); skipped where there is
no nginx binary.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.lb import HTTP_CONF, SITE_TEMPLATE, Balance, render_site
from bench.nginx import render
from bench.procs import find_tool


def nginx_test(site_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    nginx = find_tool("nginx")
    if nginx is None:
        pytest.skip("no nginx binary (make bench installs Debian's)")
    site = tmp_path / "imgproxy.conf"
    site.write_text(site_text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(HTTP_CONF, tmp_path, site=site))  # as run_lb writes it
    argv = [nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_the_example_as_shipped_passes_nginx_t(tmp_path: Path) -> None:
    """An operator who copies the file unchanged gets a configuration nginx accepts."""
    result = nginx_test(SITE_TEMPLATE.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.parametrize("balance", list(Balance), ids=lambda b: b.name.lower())
def test_the_benchs_rendering_passes_nginx_t(balance: Balance, tmp_path: Path) -> None:
    """Round-robin and consistent hashing, as `make bench` runs them."""
    site = render_site(SITE_TEMPLATE.read_text(), ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3", balance)
    result = nginx_test(site, tmp_path)
    assert result.returncode == 0, result.stderr
