# automl: the API server and the workers share this one image.
#
#   docker build -t automl .
#   docker run --rm -v automl-data:/data automl keys create --project NAME --admin
#   docker run -d -p 8000:8000 -v automl-data:/data -v "$PWD/data:/data/datasets:ro" automl
#   docker run -d -v automl-data:/data -v "$PWD/data:/data/datasets:ro" --no-healthcheck \
#     automl worker --device cpu
#
# The API (the image's default command, on SQLite) listens on 0.0.0.0, so `serve` refuses
# to start while the store has no API key: `keys create` (once, above) prints the first.
# AUTOML_ALLOW_ANONYMOUS=true opts out of keys, for a trusted network only.
# Datasets: mount your image folders at /data/datasets (AUTOML_DATA_ROOT), read-only will
# do; a spec's `path: digits_folder/train` then reads ./data/digits_folder/train. The store,
# weights (/data/artifacts) and decode cache (/data/cache) live in the /data volume, which
# must be writable by uid 1000 (a named volume is; chown a bind-mounted folder).
# Nothing secret is baked in: pass AUTOML_STORAGE (with its password) at run time.
#
# The torch wheel on PyPI bundles CUDA (several GiB). For CPU-only images, point pip at
# PyTorch's CPU index; its "+cpu" builds then win over PyPI's:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t automl:cpu .
# docker-compose.yml runs the API, workers, PostgreSQL and optuna-dashboard together.

FROM python:3.11-slim

ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 --user-group automl \
    && mkdir -p /data/artifacts /data/cache /data/datasets \
    && chown -R automl:automl /data

WORKDIR /app

# Dependencies first, listed from pyproject.toml alone: this (large) layer is rebuilt only
# when pyproject.toml changes, not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package itself (its dependencies are already satisfied; README.md is the
# readme that pyproject.toml names).
COPY README.md ./
COPY automl/ ./automl/
RUN if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install --no-cache-dir ".[postgres]" \
    && rm -rf build automl.egg-info

# Example study specs: `automl submit search_spaces/digits_quick.yaml` inside the container
# (linked into the home it works in).
COPY search_spaces/ ./search_spaces/
RUN ln -s /app/search_spaces /home/automl/search_spaces

# The SQLite default, the trial weights and the decode cache (images decoded once, GAN
# generators) live under /data, a volume owned by automl; datasets are read from
# /data/datasets, a mount. With PostgreSQL (AUTOML_STORAGE=postgresql://...) weights and
# checkpoints go into the database too (AUTOML_ARTIFACT_STORE=auto), so workers on other
# machines need only the URL (and the same datasets).

ENV AUTOML_STORAGE=sqlite:////data/automl.db \
    AUTOML_ARTIFACTS_DIR=/data/artifacts \
    AUTOML_CACHE_DIR=/data/cache \
    AUTOML_DATA_ROOT=/data/datasets \
    AUTOML_HOST=0.0.0.0 \
    AUTOML_PORT=8000
VOLUME ["/data"]

USER automl
# The user's own home: `docker compose exec api automl report ID` (or export, or
# best --download) writes relative paths here, not into /app, which root owns.
WORKDIR /home/automl

EXPOSE 8000

# For `serve` only: containers running `worker` should disable it (docker-compose.yml does;
# with `docker run`, pass --no-healthcheck). python:3.11-slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AUTOML_PORT', '8000'), timeout=4)"]

# Exec form: `automl` is PID 1 and receives SIGTERM itself (uvicorn and the worker both
# stop gracefully on it).
ENTRYPOINT ["automl"]
CMD ["serve"]
