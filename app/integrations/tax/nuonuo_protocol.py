"""Nuonuo 诺税通 (数电) protocol constants shared by the adapter and the sandbox's nuonuo wire.

Sources: apis.md §7 (fields, status and error codes) and Nuonuo's saveInvoiceRedConfirm doc
(``detail[]`` rows with ``blueDetailIndex``). Codes marked SANDBOX are not in the sources; the
sandbox answers with them and the adapter maps them, so replacing one is a one-line change.
"""

from __future__ import annotations

from app.integrations.tax.base import InvoiceKind, LineKind, RedReason

SERVICES_PATH = "/open/v1/services"
TOKEN_PATH = "/accessToken"

M_ISSUE = "nuonuo.OpeMplatform.requestBillingNew"
M_QUERY = "nuonuo.OpeMplatform.queryInvoiceResult"
M_RED_FAST = "nuonuo.OpeMplatform.fastInvoiceRed"
M_RED_CONFIRM_SAVE = "nuonuo.OpeMplatform.saveInvoiceRedConfirm"
M_RED_CONFIRM_QUERY = "nuonuo.OpeMplatform.queryInvoiceRedConfirm"
M_CREDIT = "nuonuo.OpeMplatform.getCreditLine"  # 查询/刷新企业授信额度; operateType 1 = query
# 开票重试 of a failed request; orderNo and 流水号 stay those of the original request. SANDBOX: to
# verify. apis.md §7.4 names nuonuo.ElectronInvoice.reInvoice (the older 诺诺发票 product, by
# fpqqlsh); a third-party copy of Nuonuo's doc names this 诺税通 SaaS method, which refuses issued
# (发票已生成) and issuing (开票中) invoices, but its body fields were not seen. Our choice:
# {"fpqqlsh": Nuonuo's 流水号 (read back by orderNo first), "orderNo": ...}; answer
# {"invoiceSerialNum"} (the adapter keeps the known 流水号 when the answer has none).
M_RETRY = "nuonuo.OpeMplatform.reInvoice"

OK = "E0000"
E_MISSING_PARAM = "E4000"
E_INVOICE_TYPE = "E9101"
E_DUPLICATE = "E9106"  # orderNo / serial already used
E_AMOUNT_MISMATCH = "E9130"
E_TAX_TOLERANCE = "E9131"
E_SELLER_MISMATCH = "E9302"
E_CREDIT = "E9160"  # SANDBOX: 授信额度不足
E_RED_CONFIRM_REQUIRED = "E9170"  # SANDBOX
E_RED_EXCEEDS = "E9171"  # SANDBOX
E_RED_LINE = "E9172"  # SANDBOX
E_RED_NOT_ALLOWED = "E9173"  # SANDBOX
E_RETRY_LIMIT = "E9613"  # ≤20 开票重试 a day per serial (apis.md §7.2, a third-party source)
E_NOT_RETRYABLE = "E9614"  # SANDBOX: reInvoice of an invoice that is not failed (issued, issuing)
E_RATE_LIMITED = "E9429"  # SANDBOX
E_LOGIN_EXPIRED = "E9701"  # SANDBOX: 电子税务局登录失效, 需扫码/刷脸
E_SIGNATURE = "E9997"  # SANDBOX
E_TOKEN = "E9998"  # SANDBOX: accessToken invalid or expired
E_INTERNAL = "E9999"  # SANDBOX

# Words Nuonuo's messages use when the 数电 account must log in again or do 实人认证 (getQrCode doc).
LOGIN_EXPIRED_HINTS = ("扫码登录", "实人认证", "刷脸", "人脸", "登录已失效", "登录失效")

INVOICE_LINE = {InvoiceKind.NORMAL: "pc", InvoiceKind.SPECIAL: "bs"}  # 数电普票 / 数电专票 (电子)
INVOICE_LINE_KIND = {value: key for key, value in INVOICE_LINE.items()}

LINE_PROPERTY = {LineKind.NORMAL: "0", LineKind.DISCOUNT: "1", LineKind.DISCOUNTED: "2"}
LINE_PROPERTY_KIND = {value: key for key, value in LINE_PROPERTY.items()}

# Nuonuo's own order: 1 销货退回, 2 开票有误, 3 服务中止, 4 销售折让 (fapiao.md §8.1: map per vendor).
RED_REASON = {RedReason.RETURNED: "1", RedReason.WRONG: "2", RedReason.SERVICE_STOPPED: "3",
              RedReason.ALLOWANCE: "4"}
RED_REASON_KIND = {value: key for key, value in RED_REASON.items()}

STATUS_ISSUED = "2"
STATUS_PENDING = ("20", "21")
STATUS_FAILED = ("22", "24")
STATUS_VOIDED = ("3", "31")

MAX_ORDER_NO = 20
MAX_QUERY = 50  # serialNos / orderNos per queryInvoiceResult call
