"""The on-premises model appliance."""

from appliance.celery import app as celery_app

__all__ = ["celery_app"]
