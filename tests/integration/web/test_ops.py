"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Final

import pytest
from azure.storage.blob.aio import ContainerClient

from tests.helpers import AppClient, AppClientFactory, payload, upload
from tests.support.origin_proxy import OriginProxy


async def test_healthz_never_touches_origin(client: AppClient, origin: OriginProxy) -> None:
    """GET and HEAD /healthz answer 200 without any origin request, even when Azure fails."""
    origin.fail_with(503)
    assert (await client.get("/healthz")).status == 200
    assert (await client.head("/healthz")).status == 200
    assert origin.requests == []


async def test_readyz_follows_the_origin(client: AppClient, origin: OriginProxy) -> None:
    """/readyz is 200 while the container answers, 503 while it does not, and 200 again after."""
    assert (await client.get("/readyz")).status == 200
    origin.fail_with(503)
    response = await client.get("/readyz")
    assert response.status == 503
    assert "not ready" in await response.text()
    origin.heal()
    assert (await client.get("/readyz")).status == 200
    assert (await client.head("/readyz")).status == 200


async def test_readyz_reports_unreachable_origin(client: AppClient, origin: OriginProxy) -> None:
    """A closed origin port (connection refused) makes /readyz 503, not an error."""
    assert (await client.get("/readyz")).status == 200
    await origin.close()
    assert (await client.get("/readyz")).status == 503


async def test_metrics_expose_requests_cache_and_origin(
    client: AppClient, container: ContainerClient
) -> None:
    """/metrics is Prometheus text with request, cache, origin and byte counters."""
    await upload(container, "m.png", payload(1234))
    await (await client.get("/images/m.png")).read()
    await (await client.get("/images/m.png")).read()
    await client.get("/images/missing.png")

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples['imgproxy_http_requests_total{status="200"}']) == 2
    assert float(samples['imgproxy_http_requests_total{status="404"}']) == 1
    assert float(samples["imgproxy_cache_hits_total"]) == 1
    assert float(samples["imgproxy_cache_misses_total"]) == 2
    assert float(samples["imgproxy_cache_coalesced_total"]) == 0
    assert float(samples["imgproxy_cache_origin_fetches_total"]) == 2
    assert float(samples["imgproxy_cache_items"]) == 1
    assert float(samples["imgproxy_cache_bytes"]) == 1234
    assert float(samples["imgproxy_http_sent_bytes_total"]) == 2 * 1234
    assert float(samples['imgproxy_origin_request_seconds_count{kind="whole"}']) == 2


METRICS_TOKEN: Final = "test-metrics-token"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer"],
    ids=["none", "wrong", "other-scheme", "longer", "empty"],
)
async def test_metrics_need_the_token_when_one_is_set(
    app_client: AppClientFactory, authorization: str | None
) -> None:
    """With server.metrics_token set, a scrape without that bearer token is a 401 that asks for
    one and shows no metric; with it, the exposition as before."""
    client = await app_client(server__metrics_token=METRICS_TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}

    refused = await client.get("/metrics", headers=headers)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "imgproxy_" not in await refused.text()
    granted = await client.get("/metrics", headers={"Authorization": f"bearer  {METRICS_TOKEN} "})
    assert granted.status == 200
    assert "imgproxy_http_requests_total" in await granted.text()
    # The other operations routes stay open.
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
