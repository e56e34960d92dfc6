"""The mock connector and server: DataCollect's mock-sync-server protocol, for the demo and tests."""
