"""OpenFn Lightning connector: push to a webhook trigger, pull from a Collections store, and a fake Lightning."""
