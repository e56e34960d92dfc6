"""OpenSPP 17 (Odoo 17 + OpenG2P registry) connector: JSON-RPC client, connector and a faithful fake server.

- :mod:`connectors.openspp.client`: the Odoo JSON-RPC client and its error classification.
- :mod:`connectors.openspp.connector`: :class:`OpenSppConnector` (push, pull, lookup, check).
- :mod:`connectors.openspp.fake`: the fake server the tests, benchmark and demo run against.
"""
