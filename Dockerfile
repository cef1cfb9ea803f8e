# automl: the API server and the workers share this one image.
#
#   docker build -t automl .
#   docker run -p 8000:8000 -v automl-data:/data automl                  # API on SQLite
#   docker run -v automl-data:/data --no-healthcheck automl worker --device cpu
#
# /data must be writable by uid 1000 (a named volume is; chown a bind-mounted folder).
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
    && mkdir -p /data/artifacts \
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

# Example study specs: `automl submit search_spaces/digits_quick.yaml` inside the container.
COPY search_spaces/ ./search_spaces/

# The SQLite default and the trial weights live under /data, a volume. With PostgreSQL
# (AUTOML_STORAGE=postgresql://...) weights and checkpoints go into the database too
# (AUTOML_ARTIFACT_STORE=auto), so workers on other machines need only the URL.

ENV AUTOML_STORAGE=sqlite:////data/automl.db \
    AUTOML_ARTIFACTS_DIR=/data/artifacts \
    AUTOML_HOST=0.0.0.0 \
    AUTOML_PORT=8000
VOLUME ["/data"]

USER automl

EXPOSE 8000

# For `serve` only: containers running `worker` should disable it (docker-compose.yml does;
# with `docker run`, pass --no-healthcheck). python:3.11-slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AUTOML_PORT', '8000'), timeout=4)"]

# Exec form: `automl` is PID 1 and receives SIGTERM itself (uvicorn and the worker both
# stop gracefully on it).
ENTRYPOINT ["automl"]
CMD ["serve"]
