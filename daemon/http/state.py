"""The parts of the daemon a route may reach, kept on the app's state by app.py: each route takes what it uses."""

from __future__ import annotations

from starlette.requests import Request

from daemon.config import Settings
from daemon.inference.runtime import Runtime
from daemon.shared_pulls import SharedPulls
from modelstore.store import ModelStore


def store_of(request: Request) -> ModelStore:
    return request.app.state.store


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def pulls_of(request: Request) -> SharedPulls:
    return request.app.state.pulls


def settings_of(request: Request) -> Settings:
    return request.app.state.settings
