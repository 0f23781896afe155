"""How the gateway's collaborators are built from the settings: notification channels and
the InfluxDB writer (kept apart from :mod:`gateway.runtime.service`, which runs them)."""

from __future__ import annotations

import logging

from gateway.core.config import Settings
from gateway.notify.dispatch import Channel, ChannelFilter, EmailNotifier, WebhookNotifier
from gateway.storage.influx import LineWriter, V1Target, V1Writer, V2Target, V2Writer, WriteError

log = logging.getLogger(__name__)


def notification_channels(settings: Settings) -> list[Channel]:
    """Webhook and e-mail channels from the settings (none configured: none)."""
    channels = []
    if settings.webhook_url:
        channels.append(
            Channel(
                "webhook",
                WebhookNotifier(
                    settings.webhook_url, settings.webhook_secret, settings.webhook_template
                ),
                ChannelFilter(min_severity=settings.webhook_min_severity),
            )
        )
    if settings.smtp_host:
        channels.append(
            Channel(
                "email",
                EmailNotifier(
                    settings.smtp_host,
                    settings.smtp_port,
                    settings.smtp_sender,
                    settings.smtp_username,
                    settings.smtp_password,
                    settings.smtp_starttls,
                ),
                ChannelFilter(
                    types=frozenset({"alert.firing", "workorder.opened", "workorder.escalated"}),
                    min_severity=settings.email_min_severity,
                ),
            )
        )
    return channels


def make_writer(settings: Settings) -> LineWriter:
    """The InfluxDB writer the settings ask for."""
    if settings.influx_version == 2:
        return V2Writer(
            V2Target(
                settings.influx_url,
                settings.influx_org,
                settings.influx_bucket,
                settings.influx_token,
            )
        )
    return V1Writer(
        V1Target(
            settings.influx_url,
            settings.influx_database,
            settings.influx_retention_policy,
            settings.influx_username,
            settings.influx_password,
        )
    )


def ensure_database(writer: LineWriter) -> None:
    """Create the InfluxDB 1.x database at start (the writer also does it on a 404 later)."""
    if isinstance(writer, V1Writer):
        try:
            status, text = writer.create_database()
            if status >= 300:
                log.warning("CREATE DATABASE answered HTTP %d: %s", status, text[:200])
        except WriteError as err:
            log.warning("could not create the InfluxDB database yet: %s", err)
