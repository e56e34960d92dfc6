"""The mock connector and servers: DataCollect's mock-sync-server protocol, for the demo and tests."""
