"""The HTTP request a purge becomes: `cdn.purge_method` to `cdn.purge_url` with `cdn.purge_headers`
(environment variables already expanded at load time) and `cdn.purge_body`.

The URL and the body are `string.Template`s with three placeholders: `$tag` (the blob's tag, or
the container's for a purge of everything), `$path` (the blob path percent-encoded with `/` kept;
empty for everything) and `$container` (percent-encoded). Every value is ASCII without quotes or
backslashes, so it is safe in a URL, a JSON string or a form alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Final
from urllib.parse import quote

from imgproxy.config import CdnConfig
from imgproxy.http.tags import CdnTags

DEFAULT_CONTENT_TYPE: Final = "application/json"  # the default body is Cloudflare's JSON


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """One request to the CDN's purge endpoint. Its headers hold a secret: never log them."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    tag: str  # what it purges, for the log


class PurgeTemplate:
    """Builds the purge request of a blob path (None: everything) from `[cdn]`."""

    def __init__(self, config: CdnConfig, tags: CdnTags, container: str) -> None:
        self._method = config.purge_method
        self._url = Template(config.purge_url)
        self._body = Template(config.purge_body)
        self._tags = tags
        self._container = quote(container, safe="")
        headers = dict(config.purge_headers)
        if config.purge_body and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = DEFAULT_CONTENT_TYPE
        self._headers = headers

    def build(self, path: str | None) -> PurgeRequest:
        tag = self._tags.container_tag if path is None else self._tags.blob_tag(path)
        values = {
            "tag": tag,
            "path": "" if path is None else quote(path, safe="/"),
            "container": self._container,
        }
        return PurgeRequest(
            self._method,
            self._url.substitute(values),
            dict(self._headers),
            self._body.substitute(values).encode(),
            tag,
        )
