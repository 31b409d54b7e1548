"""`make run`: Azurite on loopback, demo images seeded, the proxy on 127.0.0.1:8080.

The proxy runs as `python -m imgproxy --config config.toml` with the origin pointed at Azurite
through environment overrides; when it stops (Ctrl-C), Azurite is stopped too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Final

from .azurite import ROOT, free_port, run_azurite
from .seed import seed

AZURITE_PORT: Final = 10000
DEMO_ADMIN_TOKEN: Final = "demo-admin-token"


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop Azurite and the proxy on SIGTERM too
    config = ROOT / "config.toml"
    azurite_port = AZURITE_PORT if _bindable(AZURITE_PORT) else free_port()
    with run_azurite(port=azurite_port) as azurite:
        container = os.environ.get("IMGPROXY_ORIGIN_CONTAINER", "images")
        names = asyncio.run(seed(azurite.connection_string, container))
        env = {
            **os.environ,
            "IMGPROXY_ORIGIN_CONNECTION_STRING": azurite.connection_string,
            "IMGPROXY_ORIGIN_CONTAINER": container,
            "IMGPROXY_ADMIN_TOKEN": os.environ.get("IMGPROXY_ADMIN_TOKEN", DEMO_ADMIN_TOKEN),
            # The disk tier is on for the demo (off by default in config.toml).
            "IMGPROXY_DISK_ENABLED": os.environ.get("IMGPROXY_DISK_ENABLED", "true"),
        }
        port = os.environ.get("IMGPROXY_SERVER_PORT", "8080")
        print(f"Azurite on {azurite.endpoint}, container '{container}' seeded with:")
        for name in names:
            print(f"  http://127.0.0.1:{port}/images/{name}")
        print(f"Admin API token: {env['IMGPROXY_ADMIN_TOKEN']}    (Ctrl-C stops the proxy and Azurite)")
        sys.stdout.flush()
        proxy = subprocess.Popen([sys.executable, "-m", "imgproxy", "--config", str(config)], env=env)
        try:
            return proxy.wait()
        except KeyboardInterrupt:
            proxy.terminate()  # also got the SIGINT from the terminal; make sure it stops
            return proxy.wait()


if __name__ == "__main__":
    sys.exit(main())
