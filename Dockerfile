# relayq's production image: the API, the workers, migrations and Flower all
# run from it, chosen by the command (see docker-compose.yml).
#
#   docker build -t relayq .
#   docker run --rm -p 8000:8000 -e RELAYQ_DATABASE_URL=... -e RELAYQ_REDIS_URL=... relayq

# The build stage installs relayq and its dependencies into a virtualenv; the
# final stage copies only that, so the source tree and pip's caches stay out.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/relayq
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relayq ./relayq
COPY api ./api
COPY worker ./worker
# A regular (not editable) install, without the dev extras.
RUN /opt/relayq/bin/pip install .


FROM python:3.11-slim

ENV PATH=/opt/relayq/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The file store docker-compose.yml mounts a volume on: an empty named volume
# takes this directory's owner, so relayq's user can write batch files there.
RUN groupadd --system --gid 10001 relayq \
    && useradd --system --uid 10001 --gid relayq --home-dir /home/relayq --create-home \
        --shell /usr/sbin/nologin relayq \
    && install -d -o relayq -g relayq -m 0750 /var/lib/relayq/files
COPY --from=build /opt/relayq /opt/relayq

USER relayq:relayq
WORKDIR /home/relayq

EXPOSE 8000
# `relayq api` execs uvicorn, so uvicorn gets the container's stop signal.
CMD ["relayq", "api", "--host", "0.0.0.0"]
