# The hub's services (registry, router, audit materialiser, views, web) share this image.
FROM python:3.11-slim
WORKDIR /opt/hub
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY connectors ./connectors
COPY schemas ./schemas
COPY policies ./policies
RUN pip install --no-cache-dir '.[postgres]'
USER nobody
ENTRYPOINT []
