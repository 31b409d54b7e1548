"""How an `/images/` answer presents a blob: inline only if it is an inert raster image.

`/images/` is served on the main application's own origin, so a blob a browser would run or
render as a document (HTML, XHTML, SVG, XML, JavaScript, ...) would be stored XSS there; nosniff
does not help when the declared type itself is HTML. A blob whose media type is on
`INERT_IMAGE_TYPES` keeps its declared type; any other follows `http.active_content`:

- `attachment` (the default): `Content-Type: application/octet-stream` and
  `Content-Disposition: attachment` (no filename: the path is the uploader's choice), which every
  browser and other client honours together with nosniff;
- `sandbox`: the declared type, relying on the CSP below (honoured by current browsers only);
- `refuse`: `ActiveContentRefused` (403) before any of the blob is sent.

Every answer carries `Content-Security-Policy: default-src 'none'; sandbox` (CSP Level 3,
#directive-sandbox: a document so delivered runs no script, loads nothing and has an opaque
origin) and nosniff, whatever the type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imgproxy.config import ActiveContent, HttpConfig
from imgproxy.core.errors import ActiveContentRefused

CONTENT_SECURITY_POLICY: Final = "default-src 'none'; sandbox"
# Sent with every answer of ours, images and errors alike.
GUARD_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),  # never sniffed into another type
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
)

# Raster types a browser only ever shows as a picture (or offers to save): no script, no links,
# no document. The registered names and the aliases uploaders still send (image/jpg, image/pjpeg,
# image/x-ms-bmp). Deliberately not `image/*`: image/svg+xml is a script-capable document.
INERT_IMAGE_TYPES: Final = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-ms-bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/jxl",
        # Not an image, but as inert: data a browser shows as text and never runs (nosniff keeps
        # it from being read as a script). `fm=json` answers it.
        "application/json",
    }
)
_ATTACHMENT: Final = (
    ("Content-Type", "application/octet-stream"),
    ("Content-Disposition", "attachment"),
)


def is_inert_image(content_type: str) -> bool:
    """Whether `content_type` names a type of `INERT_IMAGE_TYPES`: compared case-insensitively
    without its parameters (RFC 9110 section 8.3.1); empty or malformed is not."""
    # Only space and tab are optional whitespace (section 5.6.3): a value with a line break or
    # anything else around the type is malformed, so not on the list.
    return content_type.partition(";")[0].strip(" \t").lower() in INERT_IMAGE_TYPES


@dataclass(frozen=True, slots=True, eq=False)
class ResponsePolicy:
    """What `[http]` makes every `/images/` answer carry, made once per application.

    Compared and hashed by identity (`eq=False`): it keys the header memos on every hit, where a
    field-wise hash would cost a call per request.
    """

    cache_control: str
    active_content: ActiveContent = ActiveContent.ATTACHMENT

    @classmethod
    def from_config(cls, http: HttpConfig) -> ResponsePolicy:
        return cls(http.cache_control, ActiveContent(http.active_content))

    def content_headers(self, content_type: str) -> tuple[tuple[str, str], ...]:
        """`Content-Type` (and `Content-Disposition` where needed) of an answer with a blob of
        `content_type`: the one place that decides how a blob is presented. Raises
        `ActiveContentRefused` for a blob it refuses."""
        if is_inert_image(content_type) or self.active_content is ActiveContent.SANDBOX:
            return (("Content-Type", content_type),)
        if self.active_content is ActiveContent.REFUSE:
            raise ActiveContentRefused(content_type)
        return _ATTACHMENT

    def admit(self, content_type: str) -> None:
        """Raise `ActiveContentRefused` for a refused blob: called before any of it is read for, or
        sent to, the client (the header builders would refuse it too, but only once it is open)."""
        if self.active_content is ActiveContent.REFUSE:
            self.content_headers(content_type)
