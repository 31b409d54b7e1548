"""The pass-through part: imgproxy in front of an app, against nginx `proxy_pass`."""
