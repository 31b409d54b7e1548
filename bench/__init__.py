"""`make bench`: imgproxy against nginx, Varnish and a bare aiohttp handler, all in front of Azurite."""
