# The premix worker: `arq premix.worker.WorkerSettings`, configured by PREMIX_* variables.
# A production image: premix without its `local` extra (no embedded store, no bundled Valkey or
# SecantusDB) and without test tools; .dockerignore keeps the context to what is copied.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY premix ./premix
RUN pip install . && useradd --system --uid 10001 premix
USER premix

# Healthy while Redis, MongoDB and the RPC node answer and a worker of the queue is live.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["premix", "health"]

CMD ["arq", "premix.worker.WorkerSettings"]
