"""Built-in connectors, registered through the dcsync.connectors entry points like any plugin."""
