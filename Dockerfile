# syntax=docker/dockerfile:1
# Batchwise: the API (`serve`, the default command), workers (`worker`) and `migrate` in one image.
# Build: docker build -t batchwise .   Run the whole service: docker compose up (see README).

# --- build: the project and every dependency as wheels -----------------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY migrations ./migrations
# `pip wheel .` builds the project exactly as the README's `pip install` does (migrations/ ships
# inside the package as service/_migrations, setup.py says how).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: the README's install (a venv, pip install of the project), no compilers ----------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/batchwise/bin:$PATH \
    BATCHWISE_DATA_DIR=/data
# The wheels are bind-mounted from the build stage, so none of them stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/batchwise \
    && /opt/batchwise/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/batchwise-*.whl \
    && groupadd --system --gid 10001 batchwise \
    && useradd --system --uid 10001 --gid batchwise --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin batchwise \
    && mkdir /data \
    && chown batchwise:batchwise /data
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# No curl in a slim image: the interpreter fetches /healthz (a non-2xx answer raises, exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BATCHWISE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["batchwise"]
CMD ["serve", "--host", "0.0.0.0"]
