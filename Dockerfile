# raftkv image: the store, its CLI, and jepsen_style with a real toxiproxy-server.
FROM ghcr.io/shopify/toxiproxy:2.9.0 AS toxiproxy

FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
# jepsen_style prefers a toxiproxy-server on PATH over its own Python server.
COPY --from=toxiproxy /toxiproxy /usr/local/bin/toxiproxy-server
WORKDIR /src
COPY pyproject.toml README.md ./
COPY raftkv ./raftkv
COPY jepsen_style ./jepsen_style
# The harness extra too: the image also runs jepsen_style (compose's jepsen profile).
RUN pip install --no-cache-dir '.[harness]'
VOLUME /data
EXPOSE 7001 7101
CMD ["raftkv", "serve"]
