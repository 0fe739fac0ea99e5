import gc
import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "carsite.settings")
application = get_wsgi_application()

logger = logging.getLogger(__name__)


def warm_up() -> None:
    """Pay at start for what a web process's first upload would otherwise pay (about 0.3 s measured here).

    Importing the URLconf pulls in every view, serializer and the schema generator; the first
    ``classify.delay`` imports the Redis transport and opens the broker connection. Never raises nor hangs:
    a broker that is down at start is reported, and uploads stay queued until it is back.
    """
    from django.conf import settings
    from django.urls import reverse
    from PIL import Image

    import classifier.tasks  # noqa: F401  (the task the upload queues)

    reverse("classification-list")  # imports the URLconf and builds the reverse lookup tables
    Image.init()  # registers every image plugin now rather than on the first unknown format
    from carsite.celery import app

    app.finalize()  # binds the registered tasks once instead of on the first .delay()
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise stop every request thread for tens of milliseconds now and then.
    gc.freeze()
    if not settings.CELERY_BROKER_URL:
        return
    try:
        with app.producer_or_acquire() as producer:
            # Bounded: a broker that accepts connections but never answers must not keep the site from starting.
            producer.connection.ensure_connection(max_retries=1, timeout=2 * settings.CELERY_BROKER_TIMEOUT)
    except Exception as exc:  # the site still starts; uploads report the broker problem per job
        logger.warning("could not reach the Celery broker at start: %s", exc)


warm_up()
