# One image for every role; the compose file picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md requirements-prod.lock ./
COPY config ./config
COPY worker ./worker
COPY tasks ./tasks
COPY refunds ./refunds
COPY sandbox ./sandbox
# The runtime pins of the lock (hash-checked), then the project itself without resolving again.
RUN pip install --no-cache-dir -r requirements-prod.lock && pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 refunds
USER refunds
