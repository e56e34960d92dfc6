"""Real-time mode (``dcsync serve``): pushes started by the event log itself, pulls started by a remote's
webhook, beside the embedded scheduler. See docs/realtime.md."""
