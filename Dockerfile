# One image for the presence monitor and for the apps in this repository, each run by `meshkit run`.
#
#   docker build -t registry.example.com/meshkit:0.1.0 .                     # default app: the monitor
#   docker build --build-arg APP=example_services.lambda_example.main:app -t ... .
#   docker run IMAGE                                  # runs the APP built in (MESHKIT_APP at run time)
#   docker run IMAGE example_services.rest_example.main:app -Dlog.format=json   # a command names the app
#
# Every app serves on 0.0.0.0:8080 in the container (SERVER_PORT below beats application.properties;
# set SERVER_PORT, not --port, so that the HEALTHCHECK follows). The Kubernetes manifests in
# deploy/kubernetes give the app as the container's args. No image is built in this repository's CI: its
# machines run no container engine.

# ---- build: the meshkit wheel, installed with its runtime dependencies into a venv of its own ----
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshkit ./meshkit
COPY presence_server ./presence_server

# kafka: the connector the manifests use; EXTRAS=kafka,hazelcast for Hazelcast too
ARG EXTRAS=kafka
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/meshkit \
    && wheel="$(ls /wheels/meshkit-*.whl)" \
    && /opt/meshkit/bin/pip install "${wheel}[${EXTRAS}]" \
    && /opt/meshkit/bin/pip uninstall -y pip

# ---- runtime: the venv, the example apps, a non-root user; no compiler, no pip ----
FROM python:3.11-slim-bookworm AS runtime

# the app `meshkit run` starts when the container is given no command
ARG APP=presence_server.main:app

RUN groupadd --system --gid 10001 meshkit \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshkit

COPY --from=build /opt/meshkit /opt/meshkit
WORKDIR /app
# the seed's demo apps are not in the wheel; `meshkit run` puts the working directory (/app) on sys.path
COPY example_services ./example_services
RUN /opt/meshkit/bin/python -m compileall -q /app/example_services

ENV PATH=/opt/meshkit/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVER_PORT=8080 \
    MESHKIT_APP=${APP}

# a fixed numeric UID:GID, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd
USER 10001:10001
EXPOSE 8080

# liveness, not /health: /health is 503 while the app drains after SIGTERM, and that is no reason to kill it
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVER_PORT', '8080') + '/livenessprobe', timeout=2)"]

# exec: meshkit is PID 1 and gets SIGTERM itself (the drain); the command's arguments, if any, name the app
ENTRYPOINT ["/bin/sh", "-c", "[ \"$#\" -gt 0 ] || set -- \"$MESHKIT_APP\"; exec meshkit run --host 0.0.0.0 \"$@\"", "meshkit"]
CMD []
