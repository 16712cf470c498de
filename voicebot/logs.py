"""Logging set-up with redaction: Aadhaar, phone and bank numbers never reach a log line."""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["RedactingFilter", "redact", "setup_logging"]

# Aadhaar: 12 digits, often grouped 4-4-4; phones: 10 digits with an optional +91/0 prefix;
# bank accounts: 9-18 digit runs. Helpline numbers (short or 1800-xxx-xxxx) stay readable.
_AADHAAR = re.compile(r"(?<!\d)\d{4}[ -]?\d{4}[ -]?\d{4}(?!\d)")
_PHONE = re.compile(r"(?<![\d\w])(?:\+?91[ -]?|0)?[6-9]\d{4}[ -]?\d{5}(?!\d)")
_LONG_DIGITS = re.compile(r"(?<!\d)(?!1800)\d{9,18}(?!\d)")
_WHATSAPP_ID = re.compile(r"(whatsapp:)?\+\d{7,15}")


def redact(text: str) -> str:
    """Mask personal numbers in free text (used for logs and the audit trail)."""
    text = _WHATSAPP_ID.sub(lambda m: (m.group(1) or "") + "+<phone>", text)
    text = _AADHAAR.sub("<aadhaar>", text)
    text = _PHONE.sub("<phone>", text)
    return _LONG_DIGITS.sub("<number>", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(*, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
