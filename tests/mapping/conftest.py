"""Fixtures for the mapping engine's scenarios."""

from __future__ import annotations

import pytest
from mapping_support import SHIPPED

from connector_core.mapping import MappingSet, load_mapping


@pytest.fixture(scope="session")
def shipped() -> MappingSet:
    return load_mapping(SHIPPED)
