"""dcsync: keep a DataCollect event log and external systems in step."""
