"""Purges forwarded to a CDN in front (`[cdn] purge_url`): the request a purge becomes
(`request`), and the bounded queue that sends it with retries (`purger`). The tags that answers
carry for the CDN are `http.tags`'."""
