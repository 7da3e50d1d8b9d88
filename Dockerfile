# Echo-Vids: the Discord bot in a slim image. Models and the index live on the /data volume and
# are fetched / built on first start (scripts/docker-entrypoint.sh), so the image stays small and
# a rebuilt index survives container upgrades.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    ECHOVIDS_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first so code edits do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
COPY core ./core
COPY bot ./bot
RUN pip install .
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

RUN useradd --create-home --uid 10001 echovids \
    && mkdir -p /data \
    && chown echovids:echovids /data
USER echovids
VOLUME ["/data"]

ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["echovids", "bot"]
