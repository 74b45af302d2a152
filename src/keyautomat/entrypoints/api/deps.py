"""FastAPI dependencies: the container, its database runner and its clock."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyautomat.bootstrap import Container


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


Services = Annotated[Container, Depends(_container)]
