"""The load balancer in front of the bench's replicas: nginx, configured from `deploy/nginx-replicas.conf`.

`render_site` takes the operator's example as it is and changes three things only: the `server`
lines of the upstream (the replicas' addresses, each keeping the first line's parameters), the
`listen` line, and, for consistent hashing, the commented `hash $request_uri consistent;` line
(uncommented). Anything else the example says (keep-alive, timeouts, retries, buffering) is what
the bench measures, so the example stays true. `run_lb` wraps it in a minimal main configuration
(temporary paths, no access log) and starts Debian's nginx.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from devtools.azurite import ROOT, free_port

from . import nginx

SITE_TEMPLATE: Final = ROOT / "deploy" / "nginx-replicas.conf"
UPSTREAM: Final = "imgproxy_replicas"
HASH_LINE: Final = "hash $request_uri consistent;"
HEALTH_PATH: Final = "/lb-health"  # answered 204 by nginx itself

HTTP_CONF: Final = "    include {site};\n"  # the whole site is the example's


class Balance(enum.Enum):
    ROUND_ROBIN = "round-robin"
    CONSISTENT_HASH = "hash $request_uri consistent"


class TemplateError(ValueError):
    """The example no longer has the lines the bench changes (say which)."""


_SERVER: Final = re.compile(r"^(?P<indent>\s*)server\s+(?P<address>\S+?)(?P<params>(\s+[^;]*)?);\s*$")
_LISTEN: Final = re.compile(r"^(?P<indent>\s*)listen\s+[^;]+;\s*$")


def render_site(template: str, servers: Sequence[str], listen: str, balance: Balance) -> str:
    """The example with `servers` as the upstream, listening on `listen`, balanced by `balance`."""
    if not servers:
        raise TemplateError("no servers")
    lines = template.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"upstream {UPSTREAM} {{"), None)
    if start is None:
        raise TemplateError(f"no 'upstream {UPSTREAM} {{' line")
    end = next((i for i in range(start, len(lines)) if lines[i].strip() == "}"), None)
    if end is None:
        raise TemplateError(f"upstream {UPSTREAM} is not closed")
    body = lines[start + 1 : end]
    found = [(i, m) for i, m in ((i, _SERVER.match(line)) for i, line in enumerate(body)) if m]
    if not found:
        raise TemplateError(f"upstream {UPSTREAM} has no server line")
    first, match = found[0]
    ours = [f"{match['indent']}server {address}{match['params'] or ''};" for address in servers]
    kept = [line for i, line in enumerate(body) if i not in {i for i, _ in found}]
    body = kept[:first] + ours + kept[first:]
    hashes = [i for i, line in enumerate(body) if line.strip().lstrip("#").strip() == HASH_LINE]
    if len(hashes) != 1:
        raise TemplateError(f"expected one '{HASH_LINE}' line (commented or not), found {len(hashes)}")
    indent = body[hashes[0]][: len(body[hashes[0]]) - len(body[hashes[0]].lstrip())]
    on = balance is Balance.CONSISTENT_HASH
    body[hashes[0]] = f"{indent}{'' if on else '#'}{HASH_LINE}"
    rest = lines[end:]
    listens = [i for i, line in enumerate(rest) if _LISTEN.match(line)]
    if len(listens) != 1:
        raise TemplateError(f"expected one listen line, found {len(listens)}")
    m = _LISTEN.match(rest[listens[0]])
    assert m is not None
    rest[listens[0]] = f"{m['indent']}listen {listen};"
    return "\n".join([*lines[: start + 1], *body, *rest]) + "\n"


@contextmanager
def run_lb(servers: Sequence[str], balance: Balance, workdir: Path) -> Iterator[str]:
    """nginx balancing over `servers` ("host:port"); yields its base URL."""
    port = free_port()
    tmp = workdir / "lb"
    tmp.mkdir()
    site = tmp / "imgproxy.conf"
    site.write_text(render_site(SITE_TEMPLATE.read_text(), servers, f"127.0.0.1:{port}", balance))
    base = f"http://127.0.0.1:{port}"
    with nginx.run_nginx("lb", tmp, HTTP_CONF, base + HEALTH_PATH, site=site):
        yield base
