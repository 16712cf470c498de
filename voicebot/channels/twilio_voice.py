"""Twilio voice calls, turn by turn: ``<Record>`` → local STT → answer → ``<Play>`` (§1.7).

Routes (all POST, all signed):
  /twilio/voice            greeting with disclosure from cached prompts, then the language
                           menu (``<Gather input="dtmf">``, each pack's phrase in its own
                           voice) — or straight to the question for a returning number
  /twilio/voice/language   the menu's digits → the caller's pack (remembered for next time);
                           the menu lists only packs that can listen, and the digit of a pack
                           without a recogniser gets its ``text_only`` phrase, its greeting on
                           the caller's WhatsApp, and the menu again (``_text_only``)
  /twilio/voice/turn       ``<Record action>``: dedupes CallSid+turn, starts the turn in the
                           background, plays the answer if it is ready within
                           ``voice_answer_wait_seconds``, else a hold prompt + ``<Redirect>``
  /twilio/voice/poll       polled until the answer is parked, then ``<Play>``s it
  /twilio/voice/keys       keypad after an answer: 1 repeat, 2 slower, 0 menu, 9 WhatsApp copy
  /twilio/voice/reprompt   reached only when a recording was empty (Twilio skips ``action``)
  /twilio/voice/status     call status callback: a finished call cancels its work, deletes
                           its media and forgets its caller number
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from voicebot.appkeys import STATE, services_of
from voicebot.channels import twiml
from voicebot.channels.runtime import (
    Runtime,
    normalize_phone,
    runtime_of,
    timed,
    twilio_form,
)
from voicebot.channels.voice_turns import CHANNEL, slow_job, turn_job, whatsapp_copy
from voicebot.drain import DRAIN
from voicebot.packs import LanguagePack, PackSet
from voicebot.services import Services
from voicebot.store import DAY

__all__ = ["CHANNEL", "add_routes", "voice_packs"]

_LOGGER = logging.getLogger(__name__)
_BASE = "/twilio/voice"
_ENDED = {"completed", "busy", "failed", "no-answer", "canceled"}
_REPROMPTS = 2  # empty recordings in a row before goodbye


def voice_packs(packs: PackSet) -> list[LanguagePack]:
    """Packs a caller can choose by keypad: enabled, with a digit, able to listen."""
    menu = [p for p in packs.enabled if p.dtmf_digit is not None and p.can_listen]
    return sorted(menu, key=lambda p: p.dtmf_digit or 0)


# -- TwiML pieces ---------------------------------------------------------------------------


def _url(rt: Runtime, path: str, **query: object) -> str:
    """Absolute public URLs: Twilio signs the URL it requests with them (§4.4)."""
    suffix = "?" + urlencode({k: str(v) for k, v in query.items()}) if query else ""
    return f"{rt.settings.public_url.rstrip('/')}{_BASE}{path}{suffix}"


def _prompt(rt: Runtime, pack: LanguagePack, key: str) -> twiml.Verb:
    url = rt.prompts.url(pack, key)
    # <Say> is Twilio's TTS: only for a prompt that could not be synthesised (§1.3).
    return twiml.play(url) if url else twiml.say(pack.phrase(key))


def _ask(
    rt: Runtime, pack: LanguagePack, n: int, *, retry: int = 0, prompt: str = "ask_question"
) -> list[twiml.Verb]:
    """Prompt, record turn ``n``, and the redirect Twilio follows if the recording was empty."""
    return [
        _prompt(rt, pack, prompt),
        twiml.record(_url(rt, "/turn", n=n), max_length=rt.settings.voice_record_max_seconds),
        twiml.redirect(_url(rt, "/reprompt", n=n, r=retry)),
    ]


def _menu(
    rt: Runtime, packs: PackSet, n: int, *, greet: bool, lead: Sequence[twiml.Verb] = ()
) -> str:
    """The language menu (only packs that can listen); ``lead`` plays before it."""
    default = packs.resolve(rt.settings.default_language)
    choices = voice_packs(packs)
    digits = max((len(str(p.dtmf_digit)) for p in choices), default=1)
    verbs = [_prompt(rt, default, "greeting")] if greet else []
    verbs.extend(lead)
    verbs.append(
        twiml.gather(
            *[_prompt(rt, p, "choose_language") for p in choices],
            action=_url(rt, "/language", n=n),
            num_digits=digits,
            timeout=3,  # between digits: "1" alone waits 3 s for a possible "13"
        )
    )
    verbs.append(twiml.redirect(_url(rt, "/language", n=n)))  # no key pressed
    return twiml.response(*verbs)


def _answer(rt: Runtime, pack: LanguagePack, n: int, reply: Mapping[str, Any]) -> str:
    """Play turn ``n``'s reply; keypad shortcuts work while it and the menu play."""
    media = str(reply.get("media") or "")
    heard = twiml.play(media) if media else twiml.say(str(reply.get("text", "")))
    if reply.get("apology"):
        return twiml.response(heard, *_ask(rt, pack, n + 1, prompt="ask_question"))
    menu = twiml.gather(heard, _prompt(rt, pack, "menu"), action=_url(rt, "/keys", n=n), timeout=2)
    return twiml.response(menu, *_ask(rt, pack, n + 1))


def _hold(rt: Runtime, pack: LanguagePack, n: int, *, slow: bool) -> str:
    poll = _url(rt, "/poll", n=n, slow=int(slow), tries=1)
    return twiml.response(_prompt(rt, pack, "please_wait"), twiml.redirect(poll))


def _sorry(rt: Runtime, pack: LanguagePack, n: int) -> str:
    return twiml.response(*_ask(rt, pack, n + 1, prompt="error"))


# -- call state -----------------------------------------------------------------------------


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


async def _call(
    rt: Runtime, services: Services, form: Mapping[str, str]
) -> tuple[str, dict[str, Any], LanguagePack]:
    """(CallSid, call state, the caller's pack); recreates the state after a restart."""
    sid = form.get("CallSid", "")
    if not sid:
        raise web.HTTPBadRequest(text="CallSid is required")
    state = await rt.store.call(sid)
    if state is None:
        caller = form.get("From", "")
        user = rt.store.user_key(normalize_phone(caller))
        lang = await rt.store.language(user)
        await rt.store.put_call(sid, user=user, lang=lang, caller=caller, callee=form.get("To", ""))
        state = {
            "user": user,
            "lang": lang,
            "caller": caller,
            "callee": form.get("To", ""),
            "last": None,
        }
    # A call only ever runs in a pack that can listen: a language remembered from WhatsApp
    # that has no recogniser falls back to the default here (and ``_start`` offers the menu).
    packs, lang = services.packs, str(state.get("lang") or "")
    if lang in packs and packs.get(lang).enabled and packs.get(lang).can_listen:
        return sid, state, packs.get(lang)
    return sid, state, packs.resolve(rt.settings.default_language)


def _cannot_listen(packs: PackSet, code: str) -> LanguagePack | None:
    """The enabled pack ``code`` when it has no speech recogniser (so no call can run in it)."""
    if code in packs and packs.get(code).enabled and not packs.get(code).can_listen:
        return packs.get(code)
    return None


async def _text_only(
    rt: Runtime, services: Services, sid: str, n: int, state: Mapping[str, Any], pack: LanguagePack
) -> str:
    """A caller chose a language the bot cannot understand on a call (``[stt] language = ""``).

    Said plainly in that language (its ``text_only`` phrase), the conversation moves to text:
    the language is remembered for WhatsApp and the pack's greeting is sent to the caller's
    WhatsApp (when that channel is configured), so a typed question is answered in it. Then
    the menu of spoken languages is read again, so the caller is never left recording into a
    recogniser that does not exist.
    """
    await rt.store.set_language(str(state["user"]), pack.code)
    await whatsapp_copy(rt, sid, n, state, pack.phrase("greeting"), tag="text-only")
    return _menu(rt, services.packs, n, greet=False, lead=[_prompt(rt, pack, "text_only")])


# -- handlers -------------------------------------------------------------------------------


async def _start(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    sid, state, pack = await _call(rt, services, form)
    if request.app[DRAIN].active and rt.settings.backend == "sqlite":
        # Stopping, and this call's turns could reach no server until the restart (in scale
        # mode its next webhook goes to another web node): the busy phrase, not dead air.
        _LOGGER.info("call=%s refused: the server is stopping", sid[-6:])
        return _xml(twiml.response(_prompt(rt, pack, "busy"), twiml.hangup()))
    remembered = str(state.get("lang") or "")
    if remembered == pack.code and _realtime(request.app, rt, pack):
        language = twiml.redirect(_url(rt, "/language", n=1))  # → <Connect><Stream>
        body = twiml.response(_prompt(rt, pack, "greeting"), language)
    elif remembered == pack.code:  # a returning number: its language is remembered (any channel)
        body = twiml.response(_prompt(rt, pack, "greeting"), *_ask(rt, pack, 1))
    else:
        # A language chosen on WhatsApp that cannot listen: say so in it, then the menu.
        text_only = _cannot_listen(services.packs, remembered)
        lead = [_prompt(rt, text_only, "text_only")] if text_only else []
        body = _menu(rt, services.packs, 1, greet=True, lead=lead)
    _LOGGER.info("call=%s started lang=%s", sid[-6:], state.get("lang") or "menu")
    return _xml(body)


async def _language(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    sid, state, pack = await _call(rt, services, form)
    n = _int(request.query.get("n"), 1)
    digits = form.get("Digits", "")
    chosen = services.packs.by_digit(digits) if digits else None
    if chosen is not None and not chosen.can_listen:
        return _xml(await _text_only(rt, services, sid, n, state, chosen))
    if digits and chosen is None:
        return _xml(_menu(rt, services.packs, n, greet=False))  # unknown key: read it again
    if chosen is not None:
        pack = chosen
        await rt.store.set_language(state["user"], pack.code)
        await rt.store.set_call_language(sid, pack.code)
    if _realtime(request.app, rt, pack):
        from voicebot.channels.twilio_stream import stream_twiml

        settings = rt.settings
        return _xml(stream_twiml(settings.public_url, sid, pack.code, settings.twilio.auth_token))
    return _xml(twiml.response(*_ask(rt, pack, n)))


def _realtime(app: web.Application, rt: Runtime, pack: LanguagePack) -> bool:
    """Realtime mode (the pack's ``voice_mode``, else the deployment's): after the greeting
    and language choice, the call moves to a bidirectional Media Stream (``/twilio/stream``,
    §2) instead of ``<Record>`` turns — when the stream route is mounted in this app."""
    if (pack.voice_mode or rt.settings.voice_mode) != "realtime":
        return False
    from voicebot.channels.twilio_stream import REALTIME

    return REALTIME in app


async def _turn(request: web.Request) -> web.Response:
    # verify → parse → dedupe (CallSid+turn) → spawn → answer or hold within budget
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    sid, state, pack = await _call(rt, services, form)
    n = _int(request.query.get("n"), 1)
    if form.get("Digits") == "hangup":  # TwiML sent to a dead call is ignored (§7)
        return _xml(twiml.response(twiml.hangup()))
    key = f"{CHANNEL}:{sid}:{n}"
    if not await rt.store.claim(key, ttl=DAY):
        return _xml(await rt.store.remembered(key) or _hold(rt, pack, n, slow=False))
    job = turn_job(rt, services, sid, n, form.get("RecordingUrl", ""), pack, state["user"])
    task = rt.jobs.spawn(job, key=sid, name=str(n))
    body = await _answer_or_hold(rt, task, pack, n, slow=False)
    await rt.store.set_remembered(key, body)  # a retried POST gets this same TwiML
    return _xml(body)


async def _answer_or_hold(
    rt: Runtime, task: asyncio.Task[dict[str, Any]], pack: LanguagePack, n: int, *, slow: bool
) -> str:
    # asyncio.wait never cancels the task, even if this request is cancelled.
    await asyncio.wait({task}, timeout=rt.settings.voice_answer_wait_seconds)
    if not task.done():
        return _hold(rt, pack, n, slow=slow)
    if task.cancelled() or task.exception() is not None:
        return _sorry(rt, pack, n)
    return _answer(rt, pack, n, task.result())


async def _poll(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    sid, _state, pack = await _call(rt, services, form)
    n, tries = _int(request.query.get("n"), 1), _int(request.query.get("tries"), 1)
    slow = request.query.get("slow") == "1"
    name = f"{n}-slow" if slow else str(n)
    parked = await rt.store.parked(sid, name)
    if parked is not None:
        return _xml(_answer(rt, pack, n, parked))
    task = rt.jobs.get(sid, name)
    if task is None:  # lost (e.g. the process restarted mid-turn): apologise, move on
        return _xml(_sorry(rt, pack, n))
    wait = rt.settings.voice_poll_wait_seconds
    await asyncio.wait({task}, timeout=wait)
    if task.done():
        ok = not task.cancelled() and task.exception() is None
        return _xml(_answer(rt, pack, n, task.result()) if ok else _sorry(rt, pack, n))
    if tries * wait >= rt.settings.voice_poll_max_seconds:
        task.cancel()
        rt.metrics.inc("voicebot_errors_total", code="voice-turn-timeout")
        return _xml(_sorry(rt, pack, n))
    return _xml(
        twiml.response(twiml.redirect(_url(rt, "/poll", n=n, slow=int(slow), tries=tries + 1)))
    )


async def _keys(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    sid, state, pack = await _call(rt, services, form)
    n = _int(request.query.get("n"), 1)
    digit, last = form.get("Digits", ""), state.get("last")
    # The digits are the ones the pack's `menu` phrase announces.
    if digit == "1" and last:
        return _xml(_answer(rt, pack, n, last))
    if digit == "2" and last:
        key = f"{CHANNEL}:{sid}:{n}:slow"
        if not await rt.store.claim(key, ttl=DAY):
            return _xml(await rt.store.remembered(key) or _hold(rt, pack, n, slow=True))
        task = rt.jobs.spawn(slow_job(rt, services, sid, n, last, pack), key=sid, name=f"{n}-slow")
        body = await _answer_or_hold(rt, task, pack, n, slow=True)
        await rt.store.set_remembered(key, body)
        return _xml(body)
    if digit == "0":
        return _xml(_menu(rt, services.packs, n + 1, greet=False))
    if digit == "9" and last:
        sent = await whatsapp_copy(rt, sid, n, state, str(last.get("written", "")))
        prompt = "whatsapp_sent" if sent else "error"
        return _xml(twiml.response(_prompt(rt, pack, prompt), *_ask(rt, pack, n + 1)))
    return _xml(twiml.response(*_ask(rt, pack, n + 1)))


async def _reprompt(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    services = services_of(request)
    _sid, _state, pack = await _call(rt, services, form)
    n, retry = _int(request.query.get("n"), 1), _int(request.query.get("r"), 0)
    if retry >= _REPROMPTS:
        return _xml(twiml.response(_prompt(rt, pack, "goodbye"), twiml.hangup()))
    return _xml(twiml.response(*_ask(rt, pack, n, retry=retry + 1, prompt="please_repeat")))


async def _status(request: web.Request) -> web.Response:
    rt, form = runtime_of(request), await twilio_form(request)
    sid, status = form.get("CallSid", ""), form.get("CallStatus", "")
    if sid and status in _ENDED:
        cancelled = await rt.jobs.cancel(sid)  # §7: a hang-up cancels the call's work
        deleted = await rt.media.delete_owner(sid)
        await rt.store.end_call(sid)
        _LOGGER.info(
            "call=%s %s: %d jobs cancelled, %d files deleted", sid[-6:], status, cancelled, deleted
        )
    return _xml(twiml.response())


def _xml(body: str) -> web.Response:
    return web.Response(text=body, content_type=twiml.CONTENT_TYPE)


def _guarded(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A bug or a failing disk must not end the call with Twilio's "application error"
    (§1.2): the caller hears the default pack's apology instead."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            _LOGGER.exception("voice webhook %s failed", request.path)
            rt = runtime_of(request)
            rt.metrics.inc("voicebot_errors_total", code="voice-webhook-failed")
            state = request.app[STATE]
            if state.services is None:
                raise
            pack = state.services.packs.resolve(rt.settings.default_language)
            return _xml(twiml.response(_prompt(rt, pack, "error"), twiml.hangup()))

    return guarded


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("", _start),
        ("/language", _language),
        ("/turn", _turn),
        ("/poll", _poll),
        ("/keys", _keys),
        ("/reprompt", _reprompt),
        ("/status", _status),
    ):
        app.router.add_post(_BASE + path, timed(_BASE + path, _guarded(handler)))
