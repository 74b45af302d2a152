"""FastAPI dependencies: the container, its database runner and its clock."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyautomat.bootstrap import Container


def services_of(request: Request) -> Container:
    """The container, for a route that takes the request instead of ``Services`` (see
    ``auth.caller_of``)."""
    container: Container = request.app.state.container
    return container


async def _container(request: Request) -> Container:
    # async: a plain def dependency would cost a worker-thread round trip per request
    return services_of(request)


Services = Annotated[Container, Depends(_container)]
