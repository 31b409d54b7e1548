"""The cache part: imgproxy against nginx `proxy_cache`, Varnish and a bare aiohttp handler."""
