"""Shared helpers for the HTTP API tests: an in-process mesh serving HTTP, and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import consul
import httpx

from meshlite import Mesh


def py_consul(address: str, **kwargs: Any) -> consul.Consul:
    """The real Consul client (sync: call it from a worker thread in async tests)."""
    host, port = address.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), **kwargs)


@asynccontextmanager
async def served(name: str = "api-1", **kwargs: Any) -> AsyncIterator[tuple[Mesh, str]]:
    """A one-peer mesh with its HTTP API on a free loopback port: ``(mesh, base_url)``."""
    kwargs.setdefault("profile", "local")
    async with Mesh(name, "127.0.0.1:0", http="127.0.0.1:0", **kwargs) as mesh:
        assert mesh.http_address is not None
        yield mesh, f"http://{mesh.http_address}"


@asynccontextmanager
async def client(base_url: str, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, **kwargs) as c:
        yield c
