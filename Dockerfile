# The premix worker: `arq premix.worker.WorkerSettings`, configured by PREMIX_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY premix ./premix
RUN pip install . && useradd --system --uid 10001 premix
USER premix

CMD ["arq", "premix.worker.WorkerSettings"]
