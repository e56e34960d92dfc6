"""An out-of-tree dcsync plugin: the Household Registry, a REST API described once and shipped as a type."""
