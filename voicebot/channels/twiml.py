"""Escape-safe TwiML builders for the verbs this bot uses (protocols.md §1.3).

Each builder returns a ``Verb`` (an XML fragment whose text and attributes are already
escaped); ``response`` wraps verbs in ``<Response>``. Only builders make ``Verb`` values, so
caller text or URLs can never inject markup.
"""

from __future__ import annotations

from typing import NewType
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "CONTENT_TYPE",
    "Verb",
    "gather",
    "hangup",
    "pause",
    "play",
    "record",
    "redirect",
    "response",
    "say",
]

CONTENT_TYPE = "text/xml"  # anything else is error 11200 (§1.2)
Verb = NewType("Verb", str)


def _element(tag: str, text: str | None = None, /, **attrs: str | int | bool | None) -> Verb:
    rendered = "".join(
        f" {name}={quoteattr(_attr(value))}" for name, value in attrs.items() if value is not None
    )
    if text is None:
        return Verb(f"<{tag}{rendered} />")
    return Verb(f"<{tag}{rendered}>{escape(text)}</{tag}>")


def _attr(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def response(*verbs: Verb) -> str:
    """A complete TwiML document (``<Response />`` when empty: the WhatsApp ack, §3.3)."""
    body = "".join(verbs)
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    return f"{head}<Response>{body}</Response>" if body else f"{head}<Response />"


def play(url: str, *, loop: int | None = None) -> Verb:
    return _element("Play", url, loop=loop)


def say(text: str, *, language: str | None = None) -> Verb:
    """Twilio's own TTS: only an emergency fallback when a cached prompt is missing (§1.3)."""
    return _element("Say", text, language=language)


def pause(seconds: int = 1) -> Verb:
    return _element("Pause", length=seconds)


def redirect(url: str) -> Verb:
    return _element("Redirect", url, method="POST")


def hangup() -> Verb:
    return _element("Hangup")


def record(
    action: str,
    *,
    timeout: int = 2,
    max_length: int = 30,
    play_beep: bool = True,
    finish_on_key: str = "#",
) -> Verb:
    """``<Record>`` for one spoken turn: trims silence, ends after ``timeout`` s of silence."""
    return _element(
        "Record",
        action=action,
        method="POST",
        timeout=timeout,
        maxLength=max_length,
        playBeep=play_beep,
        trim="trim-silence",
        finishOnKey=finish_on_key,
    )


def gather(*children: Verb, action: str, num_digits: int = 1, timeout: int = 5) -> Verb:
    """Keypad-only ``<Gather>``: ``input="speech"`` would be Twilio's cloud STT (§1.3)."""
    attrs = {
        "action": action,
        "method": "POST",
        "input": "dtmf",
        "numDigits": str(num_digits),
        "timeout": str(timeout),
    }
    rendered = "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())
    return Verb(f"<Gather{rendered}>{''.join(children)}</Gather>")
