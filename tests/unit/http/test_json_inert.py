"""`content_policy` and JSON: `application/json` (what `fm=json` answers) is inline in every mode,
while the script-capable types next to it stay refused or attachments."""

from __future__ import annotations

import pytest

from imgproxy.config import ActiveContent
from imgproxy.http.content_policy import ResponsePolicy, is_inert_image

CACHE_CONTROL = "public, max-age=60"
CONTENT_TYPE = "application/json"  # transform.info.CONTENT_TYPE (not imported: it loads pyvips)


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8"])
def test_json_is_inert(content_type: str) -> None:
    """JSON, case-insensitively and with parameters, is on the allow-list."""
    assert is_inert_image(content_type)


@pytest.mark.parametrize("mode", list(ActiveContent))
def test_json_keeps_its_type_in_every_mode(mode: ActiveContent) -> None:
    """Attachment, sandbox or refuse: `application/json` is presented as itself, never refused."""
    policy = ResponsePolicy(CACHE_CONTROL, mode)
    policy.admit(CONTENT_TYPE)
    assert policy.content_headers(CONTENT_TYPE) == (("Content-Type", "application/json"),)


@pytest.mark.parametrize(
    "content_type", ["application/javascript", "text/json-seq+html", "application/jsonp"]
)
def test_script_capable_neighbours_of_json_are_not_inert(content_type: str) -> None:
    """Only `application/json` itself: JavaScript and look-alikes stay off the list."""
    assert not is_inert_image(content_type)
