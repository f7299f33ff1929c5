"""Model views of the back office, by role."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from wtforms import PasswordField, SelectMultipleField
from wtforms.validators import ValidationError

from app import db
from app.admin.base import LedgerView, SecureModelView
from app.admin.ledger_check import LedgerCheckView
from app.admin.operations import OperationsView
from app.admin.rules import RulesView
from app.errors import ValidationFailed
from app.models import (
    AdminAuditLog,
    Invoice,
    InvoiceEvent,
    InvoiceRequest,
    JobFailure,
    Merchant,
    Order,
    SellerEntity,
    Shop,
    SkuTaxMapping,
    TaxCode,
    User,
)
from app.models.user import ROLES
from app.services import accounts

ALL_STAFF = ("tax_specialist", "operations", "auditor", "merchant", "cs_agent")


def merchant_scope() -> int | None:
    """The merchant a merchant-scoped user (merchant, cs_agent) is confined to; None: every merchant."""
    return current_user.merchant_scope()


class ScopedView(SecureModelView):
    """A merchant-scoped user sees, finds and writes only its own merchant's rows: the list,
    its count and export, and every row an endpoint looks up by id (details, edit, delete,
    actions) go through ``scope``."""

    def scope(self, query: Any, merchant_id: int) -> Any:
        return query.filter(self.model.merchant_id == merchant_id)

    def owner(self, model: Any) -> int | None:
        """The merchant a row (new or changed) belongs to; None: unknown, refused to a scoped user."""
        related = getattr(model, "merchant", None)
        return related.id if related is not None else getattr(model, "merchant_id", None)

    def get_query(self) -> Any:
        merchant_id = merchant_scope()
        query = super().get_query()
        return query if merchant_id is None else self.scope(query, merchant_id)

    def get_count_query(self) -> Any:
        merchant_id = merchant_scope()
        query = super().get_count_query()
        return query if merchant_id is None else self.scope(query, merchant_id)

    def get_one(self, id: Any) -> Any:
        merchant_id = merchant_scope()
        if merchant_id is None:
            return super().get_one(id)
        key = self.row_key(id)  # an int: PostgreSQL refuses to compare the id column with text
        if key is None:
            return None
        return self.scope(super().get_query(), merchant_id).filter(self.model.id == key).one_or_none()

    def on_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        # A scoped user with edit rights still cannot move a row to (or make one for) another merchant.
        merchant_id = merchant_scope()
        if merchant_id is not None and self.owner(model) != merchant_id:
            raise ValidationError(_("Your account may only change rows of its own merchant."))
        super().on_model_change(form, model, is_created)


class MerchantView(ScopedView):
    roles = ("merchant", "tax_specialist", "operations", "auditor")
    column_list = ("id", "name", "created_at")

    def scope(self, query: Any, merchant_id: int) -> Any:
        return query.filter(Merchant.id == merchant_id)

    def owner(self, model: Any) -> int | None:
        return model.id


class SellerEntityView(ScopedView):
    roles = ("merchant", "tax_specialist", "operations", "auditor")
    column_exclude_list = ("tax_credentials",)
    column_details_exclude_list = ("tax_credentials",)
    form_excluded_columns = ("tax_credentials",)


class ShopView(ScopedView):
    roles = ("merchant", "tax_specialist", "operations", "auditor")
    column_list = ("id", "merchant", "platform", "shop_code", "name", "active", "sync_cursor")
    column_details_exclude_list = ("credentials",)
    form_excluded_columns = ("credentials", "sync_cursor")
    column_filters = ("platform", "active")


class UserView(SecureModelView):
    roles = ()  # admin only
    edit_roles = ()
    column_list = ("id", "username", "display_name", "roles", "merchant", "active", "last_login_at")
    form_excluded_columns = ("password_hash", "api_token_hash", "created_at", "last_login_at")
    column_details_exclude_list = ("password_hash", "api_token_hash")
    secret_fields = ("new_password",)
    form_extra_fields = {
        "new_password": PasswordField(_l("New password (leave empty to keep)")),
    }
    form_overrides = {"roles": SelectMultipleField}
    form_args = {"roles": {"choices": [(r, r) for r in ROLES]}}

    def on_model_change(self, form: Any, model: User, is_created: bool) -> None:
        if form.new_password.data:
            accounts.change_password(db.session(), model, form.new_password.data)  # ends its sessions
        elif is_created:
            raise ValueError("a new user needs a password")
        try:
            accounts.check_merchant(db.session(), list(model.roles or ()),
                                    model.merchant.id if model.merchant is not None else model.merchant_id)
        except ValidationFailed:
            raise ValidationError(_("Merchant and customer-service users need a merchant: they see and change "
                                    "only its shops, orders and invoices.")) from None
        if not is_created and not model.active:
            accounts.deactivate(db.session(), model)  # ends its sessions
        super().on_model_change(form, model, is_created)


class TaxCodeView(SecureModelView):
    roles = ALL_STAFF
    edit_roles = ("tax_specialist",)
    column_searchable_list = ("code", "name", "short_name")
    column_list = ("code", "short_name", "name", "rates", "treatments", "active")


class SkuTaxMappingView(ScopedView):
    roles = ("tax_specialist", "merchant", "auditor")
    edit_roles = ("tax_specialist",)
    column_searchable_list = ("match_value",)


class OrderView(ScopedView):
    roles = ("operations", "cs_agent", "merchant", "auditor", "tax_specialist")
    allow_create = False
    allow_edit = False
    column_list = ("id", "platform", "shop_code", "order_no", "status", "paid_amount", "invoice_amount",
                   "paid_at", "updated_at")
    column_searchable_list = ("order_no",)
    column_filters = ("platform", "status", "shop_code")
    column_default_sort = ("id", True)

    def scope(self, query: Any, merchant_id: int) -> Any:
        return query.join(Shop, Shop.id == Order.shop_id).filter(Shop.merchant_id == merchant_id)


class InvoiceRequestView(ScopedView):
    roles = ("operations", "cs_agent", "merchant", "auditor", "tax_specialist")
    allow_create = False
    allow_edit = False
    column_list = ("id", "order", "title_type", "kind", "title", "tax_id", "status", "status_reason",
                   "rules_version", "issue_after", "updated_at")
    column_filters = ("status", "title_type", "kind")
    column_default_sort = ("id", True)

    def scope(self, query: Any, merchant_id: int) -> Any:
        return (query.join(Order, Order.id == InvoiceRequest.order_pk)
                .join(Shop, Shop.id == Order.shop_id).filter(Shop.merchant_id == merchant_id))


class InvoiceView(ScopedView):
    roles = ("operations", "cs_agent", "merchant", "auditor", "tax_specialist")
    allow_create = False
    allow_edit = False
    column_list = ("id", "color", "kind", "status", "number", "serial_no", "total", "total_tax",
                   "issued_at", "red_of_id", "failure_reason")
    column_filters = ("status", "color", "kind")
    column_searchable_list = ("number", "serial_no")
    column_default_sort = ("id", True)

    def scope(self, query: Any, merchant_id: int) -> Any:
        return (query.join(Order, Order.id == Invoice.order_pk)
                .join(Shop, Shop.id == Order.shop_id).filter(Shop.merchant_id == merchant_id))


class InvoiceEventView(LedgerView):
    roles = ("auditor", "operations")
    column_list = ("chain_seq", "id", "occurred_at", "kind", "order_pk", "request_id", "invoice_id",
                   "from_state", "to_state", "actor", "hash")
    column_filters = ("kind", "order_pk", "invoice_id", "to_state")


class AdminAuditLogView(LedgerView):
    roles = ("auditor",)


class JobFailureView(SecureModelView):
    roles = ("operations",)
    allow_create = False
    allow_edit = False
    column_default_sort = ("id", True)
    column_filters = ("queue", "func", "resolution")


def build_views() -> list[Any]:
    shop_cat = _l("Merchants & shops")
    tax_cat = _l("Tax")
    flow_cat = _l("Orders & invoices")
    audit_cat = _l("Audit")
    return [
        MerchantView(Merchant, name=_l("Merchants"), category=shop_cat, endpoint="merchants"),
        SellerEntityView(SellerEntity, name=_l("Seller entities"), category=shop_cat, endpoint="sellers"),
        ShopView(Shop, name=_l("Shops"), category=shop_cat, endpoint="shops"),
        TaxCodeView(TaxCode, name=_l("Tax codes"), category=tax_cat, endpoint="tax_codes"),
        SkuTaxMappingView(SkuTaxMapping, name=_l("SKU → tax code"), category=tax_cat, endpoint="sku_mappings"),
        RulesView(name=_l("Invoicing rules"), category=tax_cat, endpoint="rules", url="/admin/rules"),
        OrderView(Order, name=_l("Orders"), category=flow_cat, endpoint="orders"),
        InvoiceRequestView(InvoiceRequest, name=_l("Invoice requests"), category=flow_cat, endpoint="requests"),
        InvoiceView(Invoice, name=_l("Invoices"), category=flow_cat, endpoint="invoices"),
        InvoiceEventView(InvoiceEvent, name=_l("Invoice log"), category=audit_cat, endpoint="invoice_log"),
        AdminAuditLogView(AdminAuditLog, name=_l("Admin audit log"), category=audit_cat, endpoint="audit_log"),
        LedgerCheckView(name=_l("Ledger check"), category=audit_cat, endpoint="ledger_check",
                        url="/admin/ledger_check"),
        JobFailureView(JobFailure, name=_l("Job failures"), category=_l("Operations"), endpoint="job_failures"),
        OperationsView(name=_l("Pipeline operations"), category=_l("Operations"), endpoint="ops", url="/admin/ops"),
        UserView(User, name=_l("Users"), category=_l("Access"), endpoint="users"),
    ]
