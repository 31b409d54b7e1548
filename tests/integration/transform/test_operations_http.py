"""The geometry and filter operations over HTTP: statuses, sizes, signatures and variant keys.

Real server, real Azurite, real libvips, on images the tests make (`tests/support/images.py`).
"""

from __future__ import annotations

from typing import Any, Final

import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy.transform.signing import sign_url
from imgproxy.web.keys import TRANSFORMS
from tests.helpers import AppClient, AppClientFactory, fetch, upload
from tests.support.images import BLUE, RED, decode, jpeg, near, pixel

KEY: Final = "test-signing-key"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Every app here has transforms on (unsigned parameters allowed unless a test says otherwise)."""
    return {"transforms": True}


@pytest.fixture
async def photo(container: ContainerClient) -> bytes:
    """An 800x600 quadrant JPEG at `photo.jpg`."""
    data = jpeg(800, 600)
    await upload(container, "photo.jpg", data, content_type="image/jpeg")
    return data


def transforms_done(client: AppClient) -> int:
    return sum(client.app[TRANSFORMS].pool.stats().transforms.values())


async def test_rect_rot_and_w_give_the_turned_box(app_client: AppClientFactory, photo: bytes) -> None:
    """`rect` of the left half (400x600), turned a quarter (600x400), 150 wide: 150x100, with the
    rect's bottom-left (blue) at the top-left and its top-left (red) at the top-right."""
    client = await app_client()
    status, headers, body = await fetch(client, "/images/photo.jpg?rect=0,0,400,600&rot=90&w=150&fm=png")
    assert (status, headers["Content-Type"]) == (200, "image/png")
    decoded = decode(body)
    assert decoded.size == (150, 100)
    assert near(pixel(decoded, 0.1, 0.1), BLUE) and near(pixel(decoded, 0.9, 0.1), RED)


async def test_a_rect_beyond_the_source_answers_400_naming_rect(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """Known only once the header is read, in the engine: still a 400 naming rect, never a 500;
    the refusal is not cached (a second request answers the same)."""
    client = await app_client()
    for _ in range(2):
        status, _, body = await fetch(client, "/images/photo.jpg?rect=700,0,200,100&w=50")
        assert status == 400
        assert body.decode().startswith("bad transform parameter rect: must lie within the source")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("rect=0,0,0,5", "rect"), ("rot=45", "rot"), ("rot=0", "rot"), ("flip=x", "flip"), ("pos=fp:2,0", "pos"),
     ("blur=0.1", "blur"), ("blur=101", "blur"), ("sharp=11", "sharp"), ("rot=90&rot=90", "rot")],
)  # fmt: skip
async def test_bad_operation_values_answer_400_naming_the_parameter(
    app_client: AppClientFactory, photo: bytes, query: str, parameter: str
) -> None:
    """A bad value of an operation is a 400 whose body names the parameter."""
    client = await app_client()
    status, _, body = await fetch(client, f"/images/photo.jpg?{query}")
    assert status == 400
    assert body.decode().startswith(f"bad transform parameter {parameter}:")


async def test_operations_are_signed(app_client: AppClientFactory, photo: bytes) -> None:
    """Under a key, a signed request with operations is served; unsigned, changed or added: 403."""
    client = await app_client(transform__signing_key=KEY, transform__allow_unsigned=False)
    url = sign_url("", "photo.jpg", "rect=0,0,400,300&rot=270&blur=1&w=100", KEY)
    status, _, body = await fetch(client, url)
    assert (status, decode(body).size) == (200, (100, 133))
    for tampered in (
        "/images/photo.jpg?rect=0,0,400,300&rot=270&blur=1&w=100",
        url.replace("rot=270", "rot=90"),
        url.replace("rect=0,0,400,300", "rect=0,0,400,301"),
        url + "&flip=h",
        url + "&sharp=2",
    ):
        assert (await fetch(client, tampered))[0] == 403, tampered


async def test_one_output_one_variant_whatever_the_spelling(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`rot=180&flip=hv` is no change at all and `flip=v` is `rot=180&flip=h`: each pair is one
    variant, made once (the second is a HIT)."""
    client = await app_client()
    pairs = [("w=64&rot=180&flip=hv", "w=64"), ("w=64&flip=v", "w=64&flip=h&rot=180")]
    for first, second in pairs:
        made = transforms_done(client)
        one = await fetch(client, f"/images/photo.jpg?{first}")
        two = await fetch(client, f"/images/photo.jpg?{second}")
        assert (one[0], two[0], two[1]["X-Cache"]) == (200, 200, "HIT")
        assert one[2] == two[2] and one[1]["ETag"] == two[1]["ETag"]
        assert transforms_done(client) == made + 1


async def test_each_operation_is_its_own_variant(app_client: AppClientFactory, photo: bytes) -> None:
    """Different operations give different variants (ETags) of one source."""
    client = await app_client()
    etags = set()
    for operation in ("", "&rot=90", "&flip=h", "&blur=2", "&sharp=2", "&rect=0,0,100,100"):
        query = f"w=64{operation}"
        status, headers, _ = await fetch(client, f"/images/photo.jpg?{query}")
        assert status == 200
        etags.add(headers["ETag"])
    assert len(etags) == 6
