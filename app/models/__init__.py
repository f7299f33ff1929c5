"""All mapped classes, one module per aggregate; importing this registers them."""

from app.models.audit import AdminAuditLog
from app.models.event_log import InvoiceEvent
from app.models.gateway import GatewayStatus
from app.models.invoice import Invoice, InvoiceLine
from app.models.invoice_request import InvoiceRequest
from app.models.job import JobFailure, OutboxMessage
from app.models.login_failure import LoginFailure
from app.models.merchant import Merchant, SellerEntity, Shop
from app.models.order import Order, OrderLine, Refund
from app.models.rules import RuleSet, RuleSetVersion
from app.models.tax_code import SkuTaxMapping, TaxCode
from app.models.user import ROLES, User
from app.models.user_session import UserSession

__all__ = [
    "ROLES",
    "AdminAuditLog",
    "GatewayStatus",
    "Invoice",
    "InvoiceEvent",
    "InvoiceLine",
    "InvoiceRequest",
    "JobFailure",
    "LoginFailure",
    "Merchant",
    "Order",
    "OrderLine",
    "OutboxMessage",
    "Refund",
    "RuleSet",
    "RuleSetVersion",
    "SellerEntity",
    "Shop",
    "SkuTaxMapping",
    "TaxCode",
    "User",
    "UserSession",
]
