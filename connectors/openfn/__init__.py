"""OpenFn Lightning: push to a webhook trigger, pull from a collection; a fake Lightning for tests."""
