"""`ovembed serve`: build the services, then hand the app to uvicorn until a signal stops it."""

from __future__ import annotations

import logging

import uvicorn

from daemon.config import Settings
from daemon.http.app import create_app
from daemon.services import Services


def serve(settings: Settings) -> None:
    """Run the daemon in this process; a bad device setting raises DeviceError before the socket opens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub's HTTP client logs every request at INFO; pulls report their own progress.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    services = Services.start(settings)
    host = settings.listen.host or "0.0.0.0"
    uvicorn.run(create_app(services), host=host, port=settings.listen.port, log_level="info", access_log=False)
