# carsite application image: the same image runs the web server, Celery workers and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libjpeg62-turbo libpq5 \
    && rm -rf /var/lib/apt/lists/*
# Dependencies first, from pyproject.toml alone: a code change reuses this layer instead of reinstalling them.
# EXTRAS=serve (the default) serves the models' ONNX exports without torch; EXTRAS=serve,train can also train
# (torch from its CPU wheel index).
ARG EXTRAS=serve
COPY pyproject.toml requirements.lock ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in os.environ['EXTRAS'].split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
        > /tmp/requirements.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu -c requirements.lock -r /tmp/requirements.txt
COPY README.md manage.py ./
COPY carsite carsite
COPY catalog catalog
COPY classifier classifier
COPY scraping scraping
COPY ml ml
RUN pip install --no-deps . \
    && useradd --create-home carsite && mkdir -p /data/media /data/models && chown -R carsite /data
USER carsite
ENV MEDIA_ROOT=/data/media CARSITE_MODELS_DIR=/data/models STATIC_ROOT=/app/staticfiles
RUN DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "carsite.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60"]
