# syntax=docker/dockerfile:1
# keyautomat: one image for every process (serve, worker, gateway, migrate).
# Build:  docker build -t keyautomat:0.1.0 .
# Run:    see compose.yaml and docs/operations.md, "Installing with the image".
#
# Never built or run on the machine it was written on (no container engine
# there): tests/unit/test_packaging.py and hadolint check it as text only.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# uv comes from its own image, pinned to the version that wrote uv.lock.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build: resolve exactly uv.lock into /app/.venv, without dev tools ----
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project. It stays in /app (an editable install): migrations are read
# from /app/migrations next to the source, which a wheel would not carry.
COPY alembic.ini ./
COPY migrations ./migrations
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# ---- runtime: the same Python, the environment, no uv, no compiler ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 keyautomat \
    && useradd --system --uid 10001 --gid keyautomat \
        --home-dir /var/lib/keyautomat --create-home --shell /usr/sbin/nologin keyautomat
COPY --from=build /app /app
# The secret key is never in the image: the variable names the file a secret
# mount provides (the name, not the key, is what the linter sees).
# hadolint ignore=DL3064
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYAUTOMAT_DATABASE_URL=sqlite:////var/lib/keyautomat/keyautomat.db \
    KEYAUTOMAT_SECRET_KEY_FILE=/run/secrets/keyautomat_secret_key \
    KEYAUTOMAT_LOG_FORMAT=json
WORKDIR /var/lib/keyautomat
# Numeric, so that an orchestrator can tell it is not root without the image.
USER 10001:10001
VOLUME ["/var/lib/keyautomat"]
EXPOSE 8080
# /healthz: the process serves HTTP. Processes without HTTP (worker, gateway,
# migrate) have this check turned off in compose.yaml.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["keyautomat"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
