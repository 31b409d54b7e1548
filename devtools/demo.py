"""`make run`: Azurite on loopback, demo images seeded, the proxy on 127.0.0.1:8080.

The proxy runs as `python -m imgproxy --config config.toml` with the origin pointed at Azurite
through environment overrides; when it stops (Ctrl-C), Azurite is stopped too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Final

from imgproxy.transform.signing import sign_url

from .azurite import ROOT, free_port, run_azurite
from .seed import seed

AZURITE_PORT: Final = 10000
DEMO_ADMIN_TOKEN: Final = "demo-admin-token"
DEMO_SIGNING_KEY: Final = "demo-signing-key"
# Two presets: a square thumbnail and a phone-sized picture, each in the format the browser takes.
DEMO_PRESETS: Final = {"thumb": "w=200&h=200&fit=cover&fm=auto", "phone": "w=640&fm=auto"}
SIGNED_DEMO: Final = "w=300&h=200&fit=cover&fm=webp"


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
            # The disk tier and transforms are on for the demo (off by default in config.toml).
            "IMGPROXY_DISK_ENABLED": os.environ.get("IMGPROXY_DISK_ENABLED", "true"),
            "IMGPROXY_TRANSFORM_ENABLED": os.environ.get("IMGPROXY_TRANSFORM_ENABLED", "true"),
            "IMGPROXY_TRANSFORM_SIGNING_KEY": os.environ.get(
                "IMGPROXY_TRANSFORM_SIGNING_KEY", DEMO_SIGNING_KEY
            ),
            "IMGPROXY_TRANSFORM_PRESETS": os.environ.get(
                "IMGPROXY_TRANSFORM_PRESETS", json.dumps(DEMO_PRESETS)
            ),
        }
        port = os.environ.get("IMGPROXY_SERVER_PORT", "8080")
        base = f"http://127.0.0.1:{port}"
        print(f"Azurite on {azurite.endpoint}, container '{container}' seeded with:")
        for name in names:
            print(f"  {base}/images/{name}")
            print(f"    preset:  {base}/images/{name}?preset=thumb")
            print(f"    signed:  {sign_url(base, name, SIGNED_DEMO, env['IMGPROXY_TRANSFORM_SIGNING_KEY'])}")
        print(f"Presets: {env['IMGPROXY_TRANSFORM_PRESETS']}")
        print("Sign other URLs with: IMGPROXY_TRANSFORM_SIGNING_KEY=... python -m imgproxy sign PATH 'w=300'")
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
