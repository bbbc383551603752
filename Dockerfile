# syntax=docker/dockerfile:1
# Paywatch: one image for every source and sink.
#   docker build -t paywatch .
#   docker run --rm paywatch                      # embedded simulator, stdout
#   docker run --rm paywatch -w 2                 # arguments append to bytewax.run
# Settings: PAYWATCH_CONFIG=/path.yaml and PAYWATCH__SECTION__KEY=value.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: pinned dependencies (wheels) into a venv; any build tool a ----
# -- dependency might ever need belongs in this stage, never in the next ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-compile --requirement /tmp/requirements.txt

# -- runtime: the venv and the code, nothing else -----------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp
RUN groupadd --system --gid ${UID} paywatch \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /app --no-create-home --shell /usr/sbin/nologin paywatch
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root config/ config/
COPY --chown=root:root cli/ cli/
COPY --chown=root:root connectors/ connectors/
COPY --chown=root:root observability/ observability/
COPY --chown=root:root operators/ operators/
COPY --chown=root:root dataflow.py ./
USER ${UID}:${UID}
# 9100: Prometheus /metrics, /healthz, /readyz (when metrics.port is set).
# 3030: Bytewax's own /metrics (when BYTEWAX_DATAFLOW_API_ENABLED is set; it
# writes dataflow.json to BYTEWAX_DATAFLOW_API_CACHE_PATH, /app is read-only).
EXPOSE 9100 3030
ENTRYPOINT ["python", "-m", "bytewax.run", "dataflow"]
CMD []
