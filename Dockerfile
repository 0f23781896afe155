# The gateway as a container image (see docker-compose.yml and grafana/README.md).
# Configuration comes from SCC_* environment variables (gateway/core/config.py); the registry,
# spool and dead letters live in the state directory, a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCC_STATE_DIR=/var/lib/scc

WORKDIR /app
COPY pyproject.toml README.md ./
COPY devices devices
COPY rules rules
COPY simulators simulators
COPY gateway gateway
COPY fixtures fixtures
RUN pip install . \
    && useradd --system --home-dir /var/lib/scc --shell /usr/sbin/nologin scc \
    && mkdir -p /var/lib/scc \
    && chown scc:scc /var/lib/scc

USER scc
VOLUME ["/var/lib/scc"]
CMD ["python", "-m", "gateway", "run"]
