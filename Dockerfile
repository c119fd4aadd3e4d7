# syntax=docker/dockerfile:1
# tfleet in one image: the operator (`tfleet run`) and the health bridge that runs as a
# native sidecar of every serving pod (`tfleet health-bridge`).
#
#   docker build -t ghcr.io/tfleet/tfleet:0.1.0 .
#
# The virtualenv is built with Debian 12's Python 3.11, the interpreter of the distroless
# runtime image, so it runs there unchanged: no compilers, no shell, no package manager,
# no TensorFlow (only the TF-free config protos of tensorflow-serving-api are used, so
# that package is installed without its dependencies). The test suite runs this build
# stage's install steps in a fresh virtualenv (tests/packaging/test_image.py).
ARG BUILD_IMAGE=debian:12-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
# The Debian release is pinned by the image tag; its python3-venv follows that release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# prometheus-client serves the operator's metrics. kubernetes/aio is the client's asyncio
# twin (about 70 MB with its bytecode); tfleet and kopf use neither it nor pip at run time.
RUN python3.11 -m venv /opt/tfleet \
    && /opt/tfleet/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/tfleet/bin/pip install /wheels/tfleet-*.whl "prometheus-client>=0.20" \
    && /opt/tfleet/bin/pip install --no-deps "tensorflow-serving-api>=2.17" \
    && /opt/tfleet/bin/pip uninstall --yes pip setuptools \
    && rm -rf /opt/tfleet/lib/python3.11/site-packages/kubernetes/aio

# The runtime stage gets the virtualenv only: no wheels, no pip, no build tools.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="tfleet" \
      org.opencontainers.image.description="Kubernetes operator for fleets of TensorFlow Serving model servers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tfleet/tfleet"
COPY --from=build /opt/tfleet /opt/tfleet
# Serving pods start the sidecar as `tfleet`, found on this PATH.
ENV PATH=/opt/tfleet/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The numeric non-root user that the chart and the serving pods' sidecar run as
# (restricted Pod Security profile).
USER 65532:65532
ENTRYPOINT ["/opt/tfleet/bin/tfleet"]
CMD ["run", "--all-namespaces"]
