"""Tax gateway: the interface (``base``), one module per provider adapter (``sandbox``,
``nuonuo``) and the registry that builds them by name (``get_gateway``)."""

from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    CreditExhausted,
    GatewayPaused,
    IdempotencyConflict,
    IssueRequest,
    IssueResult,
    IssueStatus,
    NotFound,
    OutcomeUnknown,
    PermanentGatewayError,
    RedConfirm,
    RedConfirmRequest,
    RedRequest,
    TaxGateway,
    TaxGatewayError,
    TransientGatewayError,
)
from app.integrations.tax.registry import get_gateway

__all__ = [
    "Accepted",
    "AuthExpired",
    "CreditExhausted",
    "GatewayPaused",
    "IdempotencyConflict",
    "IssueRequest",
    "IssueResult",
    "IssueStatus",
    "NotFound",
    "OutcomeUnknown",
    "PermanentGatewayError",
    "RedConfirm",
    "RedConfirmRequest",
    "RedRequest",
    "TaxGateway",
    "TaxGatewayError",
    "TransientGatewayError",
    "get_gateway",
]
