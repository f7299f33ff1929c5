"""Login and logout pages."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app import db
from app.auth import end_session, login_policy, public, start_session
from app.models.user import User
from app.services import sign_in

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=80)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths: no open redirect. Browsers read a backslash as "/" (so
    # "/\evil" is "//evil") and drop control characters: refuse both outright.
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and target.isprintable() and not urlsplit(target).netloc):
        return target
    return url_for("web.home")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form)
    result = sign_in.sign_in(form.username.data, form.password.data, login_policy(),
                             address=request.remote_addr, user_agent=request.user_agent.string)
    if result.ok:
        user = db.session.get(User, result.user_id)
        if user is not None and result.session_token is not None:
            start_session(user, result.session_token)
            return redirect(_safe_next(request.args.get("next")))
    if result.retry_after is None:
        # The same answer whether the user exists, is inactive or typed a wrong password.
        flash(_("Wrong username or password."), "error")
        return render_template("auth/login.html", form=form)
    seconds = max(1, math.ceil(result.retry_after.total_seconds()))
    flash(_("Too many failed logins. Try again in %(minutes)d minutes.", minutes=math.ceil(seconds / 60)),
          "error")
    return render_template("auth/login.html", form=form), 429, {"Retry-After": str(seconds)}


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Any:
    end_session()
    return redirect(url_for("auth.login"))
