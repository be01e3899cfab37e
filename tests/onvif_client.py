"""Helpers for tests that drive the server with onvif-zeep-async (a real ONVIF client)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from onvif.zeep_aiohttp import AIOHTTPTransport

from tests.onvif_schema import validate


@contextlib.contextmanager
def validating_zeep(on_response: Callable[[bytes], object] | None = None) -> Iterator[None]:
    """Schema-validate every SOAP response onvif-zeep-async receives while open (then hand
    its bytes to ``on_response``). Use it in a module-scoped autouse fixture."""
    orig = AIOHTTPTransport._post_internal

    async def post(self: Any, address: str, message: Any, headers: Any) -> Any:
        response, content = await orig(self, address, message, headers)
        validate(content)
        if on_response is not None:
            on_response(content)
        return response, content

    mp = pytest.MonkeyPatch()
    mp.setattr(AIOHTTPTransport, "_post_internal", post)
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture(scope="module", autouse=True)
def validate_every_zeep_response() -> Iterator[None]:
    """Schema-validate every SOAP response onvif-zeep-async receives in a test module that
    imports this fixture."""
    with validating_zeep():
        yield
