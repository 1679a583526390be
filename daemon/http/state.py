"""What the app's and a request's state hold: the parts of the daemon a route may reach (put there by app.py;
each route takes what it uses), and what a request cost, for its access line (observe.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from daemon.config import Settings
from daemon.inference.pulls import Pulls
from daemon.inference.runtime import Runtime
from modelstore.store import ModelStore


def store_of(request: Request) -> ModelStore:
    return request.app.state.store


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def pulls_of(request: Request) -> Pulls:
    return request.app.state.pulls


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def note_work(request: Request, texts: int, tokens: int) -> None:
    """What an embedding or rerank request cost: its inputs and their tokens."""
    request.state.work = f" {texts} texts {tokens} tokens"


def work_of(scope: Scope) -> str:
    """The cost a route noted, as the access line ends with it; empty for routes that note none."""
    return scope.get("state", {}).get("work", "")
