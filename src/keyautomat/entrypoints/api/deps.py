"""FastAPI dependencies: the container, its database runner and its clock."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyautomat.bootstrap import Container


async def _container(request: Request) -> Container:
    # async: a plain def dependency would cost a worker-thread round trip per request
    container: Container = request.app.state.container
    return container


Services = Annotated[Container, Depends(_container)]
