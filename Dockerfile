# The agent's image (also the worker's and the sim's): small, non-root, healthy when /api/v1/ready
# answers 200. BASE: any image with Python 3.11+ and pip (a local one where no registry is reachable).
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY sim ./sim
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE}
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin coordinator
WORKDIR /app
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY topics ./topics
COPY scenarios ./scenarios
ENV COORDINATOR_TOPICS_CONTRACT=/app/topics/asyncapi.yaml \
    COORDINATOR_LOG_FORMAT=json \
    COORDINATOR_HTTP_HOST=0.0.0.0 \
    COORDINATOR_GRPC_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8088 50058
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:8088/api/v1/ready", timeout=2).status == 200 else 1)'
ENTRYPOINT ["coordinator"]
CMD ["serve"]
