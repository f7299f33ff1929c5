"""Flask-Admin back office. Each view states its roles; see app/admin/base.py."""

from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_babel import lazy_gettext as _l

from app.admin.base import SecureIndexView
from app.admin.views import build_views


def init_app(app: Flask) -> Admin:
    admin = Admin(
        app,
        name="开票 Kaipiao",
        theme=Bootstrap4Theme(fluid=True),
        index_view=SecureIndexView(name=_l("Home"), url="/admin"),
    )
    for view in build_views():
        admin.add_view(view)
    # The global role hook lets Flask-Admin blueprints through: they guard themselves.
    names = app.extensions.setdefault("kaipiao_admin_blueprints", set())
    names.update(v.blueprint.name for v in admin._views if v.blueprint is not None)
    app.extensions["kaipiao_admin"] = admin
    return admin
