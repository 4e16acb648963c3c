"""The base of every typed, torch-free configuration: method entries, model and dataset options, the recipe."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors and non-finite numbers are refused: a NaN or an infinity would only fail later."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def one_line(err: ValidationError) -> str:
    """A pydantic error as one line, `field: problem; field: problem` (the spec formats its own, richer lines)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg'].replace('Value error, ', '')}"
                     for e in err.errors())


# What a spec may give as the options of a model, a dataset or a criterion: {name: a plain value}.
OptionValues = dict[str, int | float | str | bool | list[int]]


class NoOptions(Strict):
    """What a model or dataset without options takes."""


def validated_options(what: str, model: type[Strict], options: dict) -> Strict:
    """`options` validated by `model`: TypeError for unknown names (listing the known ones), ValueError for bad
    values, each on one line starting with `what`."""
    unknown = sorted(set(options) - set(model.model_fields))
    if unknown:
        raise TypeError(f"{what} has no option(s) {', '.join(unknown)}; "
                        f"known: {', '.join(model.model_fields) or 'none'}")
    try:
        return model.model_validate(options)
    except ValidationError as err:
        raise ValueError(f"{what}: {one_line(err)}") from None
