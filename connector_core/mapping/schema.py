"""The shape of a mapping file, as pydantic models.

The file is validated in layers (file, then each mapping, then each field) rather than in one
``model_validate``: one bad field must not hide the mistakes in the others, because an integrator
wants every error of a file in one run. The layers keep nested parts as raw values (``dict[str,
Any]``) and the compiler validates them one by one, remembering each one's YAML path for error
positions.

    version: 1
    lookups:
      gender: {file: lookups/gender.csv}
    mappings:
      individual:                # mapping name; selects data.entityName "individual" by default
        match: {entity_name: individual}
        fields:                        # reversible: used for push, and inverted for pull
          given_name: $.data.first_name
        push:
          when: {path: $.data.first_name}
          fields:
            kind: {const: individual}
        pull:
          fields:
            name: {template: "{$.given_name} {$.family_name}"}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector_core.mapping.conditions import ConditionSpec

PipeItem = str | dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LookupSpec(_Strict):
    """A named code table: inline ``values`` or a CSV/YAML ``file`` (relative to the mapping)."""

    values: dict[str, Any] | None = None
    file: str | None = None
    key: str | None = Field(default=None, description="CSV key column (default: first)")
    value: str | None = Field(default=None, description="CSV value column (default: second)")
    fallback: Any = None
    passthrough: bool = False
    description: str | None = None


class FieldSpec(_Strict):
    """One output field. Exactly one source: ``path``, ``const``, ``template`` or ``each``.

    A plain string instead of a mapping is a path (``given_name: $.data.first_name``).
    """

    path: str | None = None
    const: Any = None
    template: str | None = None
    each: str | None = None
    fields: dict[str, Any] | None = Field(default=None, description="sub-record fields, with each")
    filter: ConditionSpec | None = Field(default=None, description="keep items matching, with each")
    pipe: list[PipeItem] = Field(default_factory=list)
    when: ConditionSpec | None = None
    default: Any = None
    required: bool = False
    drop_if_empty: bool = False
    optional: bool = Field(
        default=False,
        description="`mapping test --sample` accepts that no sample record has this field's source",
    )
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        return value

    def sources(self) -> list[str]:
        set_ = self.model_fields_set
        return [name for name in ("path", "const", "template", "each") if name in set_]


class BlockSpec(_Strict):
    """One direction (``push`` or ``pull``): a whole-record ``when`` and direction-only fields."""

    when: ConditionSpec | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class MatchSpec(_Strict):
    """Which entities a mapping applies to: by ``data.entityName``, else by entity ``type``."""

    entity_name: str | None = None
    type: Literal["individual", "group"] | None = None


class EntityMappingSpec(_Strict):
    description: str | None = None
    match: MatchSpec | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    push: BlockSpec | None = None
    pull: BlockSpec | None = None


class FileSpec(_Strict):
    version: Literal[1] = 1
    description: str | None = None
    lookups: dict[str, Any] = Field(default_factory=dict)
    mappings: dict[str, Any]
