"""The users' editable settings at runtime: the limits every decision uses (the deployment's, with the values of
``SettingChanged`` applied) and the ``hermes.query.config`` / ``hermes.control.config`` request/reply."""

from __future__ import annotations

import msgspec
import structlog
from nats.aio.msg import Msg
from prometheus_client import Counter

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import UNDECODABLE
from hermes_proto.events import SettingChanged
from hermes_proto.ids import new_id, utcnow
from hermes_proto.projection import Projection
from hermes_proto.queries import ErrorReply
from hermes_proto.userconfig import BY_KEY, USER_SETTINGS, ChangeSetting, ConfigReply, SettingView

from hermes_orchestrator import domain
from hermes_orchestrator.fold import ThreadFold

log = structlog.get_logger("hermes.orchestrator")
SETTINGS_CHANGED = Counter("hermes_orchestrator_settings_changed_total", "Editable settings changed by users", ["key"])


class UserLimits:
    """``current()``: the deployment's limits (``base``) with the users' settings as the fold holds them; computed
    again only after a ``SettingChanged`` was folded (a setting changes only by that event)."""

    def __init__(self, base: domain.Limits, fold: ThreadFold) -> None:
        self.base = base
        self._fold = fold
        self._cached: tuple[int, domain.Limits] | None = None

    def current(self) -> domain.Limits:
        version = self._fold.settings_version
        if self._cached is None or self._cached[0] != version:
            self._cached = (version, domain.with_user_settings(self.base, self._fold.settings))
        return self._cached[1]

    def views(self) -> list[SettingView]:
        """Every editable setting with its value in force and the deployment's."""
        limits = self.current()
        return [
            SettingView(
                key=s.key,
                env=s.env,
                value=getattr(limits, domain.LIMIT_OF_SETTING[s.key]),
                default=getattr(self.base, domain.LIMIT_OF_SETTING[s.key]),
                unit=s.unit,
                description=s.description,
                minimum=s.minimum,
                maximum=s.maximum,
                changed=s.key in self._fold.settings,
                service=s.service,
            )
            for s in USER_SETTINGS
        ]


async def on_config(msg: Msg, limits: UserLimits, store: EventStore, projection: Projection) -> None:
    """``hermes.query.config`` (empty body: every editable setting) and ``hermes.control.config``
    (:class:`ChangeSetting`: append ``SettingChanged``, answer once folded)."""
    try:
        if msg.subject == subjects.CONTROL_CONFIG:
            change = msgspec.json.decode(msg.data, type=ChangeSetting)
            spec = BY_KEY.get(change.key)
            if spec is None:
                reply: object = ErrorReply(code="unknown_setting", message=f"No editable setting {change.key!r}.")
            else:
                value = None if change.value is None else str(spec.parse(change.value))
                event = SettingChanged(
                    event_id=new_id(),
                    aggregate_id=change.key.replace(".", "-"),
                    occurred_at=utcnow(),
                    correlation_id=new_id(),
                    key=change.key,
                    value=value,
                    by=change.by,
                )
                sequences = await store.append([event])
                await projection.require_folded(max(sequences))
                SETTINGS_CHANGED.labels(change.key).inc()
                log.info("setting_changed", key=change.key, value=value, by=change.by)
                reply = ConfigReply(settings=[v for v in limits.views() if v.key == change.key])
        else:
            reply = ConfigReply(settings=limits.views())
    except UNDECODABLE as exc:
        reply = ErrorReply(code="bad_request", message=str(exc))
    except ValueError as exc:
        reply = ErrorReply(code="bad_request", message=str(exc))
    except Exception as exc:  # a bus or projection failure: say so rather than leave the asker waiting
        log.warning("config_failed", error=repr(exc))
        reply = ErrorReply(code="internal", message=f"The setting could not be changed: {exc!r}")
    if msg.reply:
        await msg.respond(msgspec.json.encode(reply))
