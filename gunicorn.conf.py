"""`gunicorn wsgi:app` picks this file up from the working directory: the same settings as
`kaipiao run` (app/web/gunicorn_config.py, KAIPIAO_WEB_* environment variables)."""

from app.web.gunicorn_config import settings as _settings

globals().update(_settings())
