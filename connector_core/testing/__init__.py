"""What plugin authors import to prove a connector: the same tools dcsync's own connectors are proven with.

- :mod:`connector_core.testing.contract` -- :class:`~connector_core.testing.contract.ConnectorContract`, the
  contract suite every connector passes, and :class:`~connector_core.testing.contract.FakeControl`, the small
  adapter a fake remote offers it;
- :mod:`connector_core.testing.harness` -- :class:`~connector_core.testing.harness.SyncHarness`, the real
  sync engine around one connector on a throwaway event log and state store;
- :mod:`connector_core.testing.plugin` -- the pytest plugin (loaded automatically once dcsync is installed)
  with fixtures for all of the above;
- :mod:`connector_core.testing.server` -- ``serve(app)``, a fake remote on a real loopback port;
- :mod:`connector_core.testing.scaffold` -- what ``dcsync new-connector`` generates;
- :mod:`connector_core.testing.hookdoc` -- ``docs/hooks.md``, generated from the hookspecs.

Nothing here is imported by the sync engine, and only ``contract`` and ``plugin`` need pytest.
"""
