"""Notification adapters: message content (Jinja2 + Babel) and transports (SMTP, SMS, sink)."""
