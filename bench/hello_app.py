"""The bare FastAPI hello app that bench/signed_reads.py measures keyautomat against.

Served exactly as ``keyautomat serve`` serves keyautomat: one uvicorn process with
uvicorn's default loop and HTTP parser (uvloop and httptools when installed, as they
are here), no access log, no log config, no proxy headers.

    python bench/hello_app.py --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
