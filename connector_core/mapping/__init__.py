"""The mapping engine: YAML mappings between DataCollect entities and external records.

Integrators describe push (entity -> external record) and pull (external record -> entity data) in
YAML; :func:`load_mapping` checks the whole file at once (every issue with file:line:column) and
compiles it into getters, transform steps and setters, so mapping a record parses nothing. The sync
engine calls::

    mappings = load_mapping("mappings/datacollect-registrant.yaml")   # or identity_mapping()
    m = mappings.for_entity(entity.to_json())                         # None: skip the entity
    result = m.push(entity.to_json(), MapContext(link=links.external_id_of))
    if result.errors: dead_letter(entity, result.reason)
    elif result.record is not None: deliver(result.record)

See docs/mapping.md for the format.
"""

from connector_core.mapping.compiler import load_mapping, load_mapping_text
from connector_core.mapping.context import MapContext, Scope, no_link, no_resolve
from connector_core.mapping.engine import (
    EntityMapping,
    IdentityMapping,
    MappingSet,
    MapResult,
    ReversibleField,
    identity_mapping,
)
from connector_core.mapping.errors import (
    MISSING,
    FieldError,
    MappingError,
    MappingIssue,
    Missing,
    ParamError,
    TransformError,
)
from connector_core.mapping.explain import Explanation, FieldTrace, StepTrace
from connector_core.mapping.transforms import (
    BuildEnv,
    Params,
    RegistryError,
    TransformDef,
    TransformRegistry,
    builtin_transforms,
    default_registry,
    register_transforms,
)
from connector_core.mapping.validate import check_file, check_text

__all__ = [
    "MISSING",
    "BuildEnv",
    "EntityMapping",
    "Explanation",
    "FieldError",
    "FieldTrace",
    "IdentityMapping",
    "MapContext",
    "MapResult",
    "MappingError",
    "MappingIssue",
    "MappingSet",
    "Missing",
    "ParamError",
    "Params",
    "RegistryError",
    "ReversibleField",
    "Scope",
    "StepTrace",
    "TransformDef",
    "TransformError",
    "TransformRegistry",
    "builtin_transforms",
    "check_file",
    "check_text",
    "default_registry",
    "identity_mapping",
    "load_mapping",
    "load_mapping_text",
    "no_link",
    "no_resolve",
    "register_transforms",
]
