"""HTTP handlers: parse the request, call the fetcher, build the response."""
