"""`bench.lb.render_site`: the bench's nginx site is `deploy/nginx-replicas.conf` with only the
replicas' addresses, the listen line and the balancing line changed."""

from __future__ import annotations

import difflib

import pytest

from bench.lb import HASH_LINE, SITE_TEMPLATE, Balance, TemplateError, render_site

SERVERS = ["127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003"]


def changed_lines(before: str, after: str) -> list[str]:
    """The lines `after` adds or removes relative to `before` (a unified diff, without context)."""
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_round_robin_changes_only_the_servers_and_the_listen_line() -> None:
    """Every other line of the operator's example (keep-alive, timeouts, retries) is kept as is,
    and the server lines keep the example's parameters."""
    template = SITE_TEMPLATE.read_text()
    rendered = render_site(template, SERVERS, "127.0.0.1:40000", Balance.ROUND_ROBIN)
    changes = changed_lines(template, rendered)
    added = [line[1:].strip() for line in changes if line.startswith("+")]
    assert added == [
        *(f"server {s} max_fails=1 fail_timeout=5s;" for s in SERVERS),
        "listen 127.0.0.1:40000;",
    ]
    removed = [line[1:].strip() for line in changes if line.startswith("-")]
    assert len(removed) == 4 and all(line.startswith(("server ", "listen ")) for line in removed)
    assert f"#{HASH_LINE}" in rendered


def test_consistent_hashing_uncomments_the_hash_line_above_keepalive() -> None:
    """`hash $request_uri consistent;` becomes live, still before `keepalive` (nginx requires the
    balancing method first)."""
    rendered = render_site(SITE_TEMPLATE.read_text(), SERVERS[:2], "127.0.0.1:40000", Balance.CONSISTENT_HASH)
    lines = [line.strip() for line in rendered.splitlines()]
    assert HASH_LINE in lines and f"#{HASH_LINE}" not in lines
    assert lines.index(HASH_LINE) < lines.index("keepalive 64;")
    assert [line for line in lines if line.startswith("server ") and line != "server {"] == [
        f"server {s} max_fails=1 fail_timeout=5s;" for s in SERVERS[:2]
    ]


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("upstream other {\n    server a:1;\n}\nserver {\n    listen 80;\n}\n", "no 'upstream"),
        ("upstream imgproxy_replicas {\n    #hash $request_uri consistent;\n}\n", "no server line"),
        ("upstream imgproxy_replicas {\n    server a:1;\n}\nserver {\n    listen 80;\n}\n", "one 'hash"),
        (
            "upstream imgproxy_replicas {\n    #hash $request_uri consistent;\n    server a:1;\n}\n",
            "one listen line",
        ),
    ],
)
def test_an_example_without_the_lines_the_bench_changes_is_refused(template: str, complaint: str) -> None:
    """If the example is edited so that a rendered config would silently differ from it, the bench
    says what is missing instead of measuring something else."""
    with pytest.raises(TemplateError, match=complaint):
        render_site(template, SERVERS, "127.0.0.1:40000", Balance.ROUND_ROBIN)
