"""The base of every PowerAuth request body model."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Body(BaseModel):
    """Unknown fields are ignored (upstream's Jackson does the same); an explicit ``null`` for
    an optional field that has a default takes the default, as leaving the field out does
    (Jackson writes nulls unless told not to: ``"mode": null`` was a 400 while a null
    ``activationId`` was fine). A null for a required field is still "must not be null"."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            defaulted = _defaulted_fields(cls)
            if defaulted:
                return {k: v for k, v in data.items() if v is not None or k not in defaulted}
        return data


@cache
def _defaulted_fields(model: type[BaseModel]) -> frozenset[str]:
    """The optional fields of ``model`` whose default is something other than None."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if not info.is_required() and info.get_default(call_default_factory=True) is not None
    )
