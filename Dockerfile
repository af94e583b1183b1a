# One image for every role; the compose file picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY worker ./worker
COPY tasks ./tasks
COPY refunds ./refunds
COPY sandbox ./sandbox
RUN pip install --no-cache-dir . && useradd --system --uid 10001 refunds
USER refunds
