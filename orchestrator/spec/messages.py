"""Plain one-line messages for spec validation errors, and one line per field for `validate --explain`.

Pydantic's own messages name union branches ("sparsities.list[float]"), its internal types and "Input
should be"; a spec author wants the field, what was expected and what they wrote. Nothing here knows the
spec's models: they are walked from the root model given.
"""
from __future__ import annotations

import re
import reprlib
import types
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from orchestrator.spec.suggest import suggest

_NONE = type(None)


def _strip(ann):
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann


def _members(ann) -> list:
    """The alternatives of a union annotation (None dropped), else [ann]."""
    ann = _strip(ann)
    if get_origin(ann) in (Union, types.UnionType):
        return [_strip(a) for a in get_args(ann) if a is not _NONE]
    return [ann]


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _literal_values(ann) -> list:
    return list(get_args(ann)) if get_origin(ann) is Literal else []


def _member_for_tag(tag: str, members: list):
    """The union member pydantic tried when it named a branch `tag` ('list[float]', 'literal[...]',
    'function-after[_order(), Ladder]', 'float', or a discriminator value such as 'ltr')."""
    for m in members:
        if _is_model(m):
            kind = m.model_fields.get("kind")
            if (kind is not None and tag in _literal_values(kind.annotation)) or re.search(rf"\b{m.__name__}\b", tag):
                return m
        elif get_origin(m) is list and tag.startswith("list["):
            return m
        elif get_origin(m) is Literal and tag.startswith("literal["):
            return m
        elif isinstance(m, type) and tag in (m.__name__, f"constrained-{m.__name__}"):
            return m
    return None


class _Where:
    """An error location walked through the models: the field path a user wrote, the model holding its last
    key, and, if the path went through a union, where and which alternatives."""

    def __init__(self, root: type[BaseModel], loc: tuple):
        self.path: list = []
        self.parent: type[BaseModel] | None = None
        self.union_at: int | None = None
        self.union_members: list = []
        self.at_branch_root = False  # the error is about the union value itself, not inside a branch
        ann = root
        self.ann = root
        for i, part in enumerate(loc):
            members = _members(ann)
            self.at_branch_root = False
            if isinstance(part, int):
                self.path.append(part)
                lists = [m for m in members if get_origin(m) is list]
                ann = get_args(lists[0])[0] if lists else None
                continue
            model = next((m for m in members if _is_model(m) and part in m.model_fields), None)
            if model is not None:
                self.path.append(part)
                self.parent, ann = model, model.model_fields[part].annotation
                continue
            branch = _member_for_tag(part, members)
            if branch is None:  # not a field and not a branch: the unknown key itself
                self.path.append(part)
                self.parent = next((m for m in members if _is_model(m)), None)
                ann = None
                continue
            # A union chosen by a 'kind' tag reports only the chosen branch's errors: nothing to merge.
            tagged = _is_model(branch) and "kind" in branch.model_fields
            if len(members) > 1 and self.union_at is None and not tagged:
                self.union_at, self.union_members = len(self.path), members
                self.at_branch_root = i == len(loc) - 1
            ann = branch
        self.ann = ann  # what the location holds: for a missing 'kind', the union it would choose from

    def text(self, upto: int | None = None) -> str:
        return ".".join(str(p) for p in self.path[:upto]) or "(top level)"


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 50, 50, 4, 4, 2
MAX_LINES = 8  # a file full of junk keys gets a handful of lines, not one per key


def _got(value) -> str:
    # reprlib: a bounded repr however large or deeply nested the value is.
    text = _SHORT.repr(value)
    return f", got {text if len(text) <= 60 else text[:57] + '...'}"


def _quote_list(values) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def describe_type(ann) -> str:
    """What a value of this annotation looks like, in words."""
    parts: list[str] = []
    for m in _members(ann):
        if get_origin(m) is Literal:
            parts += [repr(v) for v in get_args(m)]
        elif get_origin(m) is list:
            (item,) = get_args(m) or (None,)
            item_text = describe_type(item) if item is not None else "values"
            parts.append("a list of " + {"a number": "numbers", "a whole number": "whole numbers"}.get(
                item_text, item_text))
        elif _is_model(m):
            parts.append("a mapping {" + ", ".join(m.model_fields) + "}")
        elif m is bool:
            parts.append("true or false")
        elif m is int:
            parts.append("a whole number")
        elif m is float:
            parts.append("a number")
        elif m is str:
            parts.append("a string")
        elif get_origin(m) is dict:
            parts.append("a mapping")
        else:
            parts.append(getattr(m, "__name__", str(m)))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", "≥"), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "≤")}
_TYPE_WORDS = {"int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
               "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
               "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
               "finite_number": "a finite number",
               "dict_type": "a mapping of fields", "model_type": "a mapping of fields",
               "model_attributes_type": "a mapping of fields"}


def _message(e: dict, where: _Where) -> str:
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        known = list(where.parent.model_fields) if where.parent is not None else []
        return "unknown key" + suggest(str(where.path[-1]), known)
    if kind == "union_tag_invalid":
        tags = [t.strip(" '\"") for t in str(ctx.get("expected_tags", "")).split(",")]
        what = str(where.path[0]).rstrip("s") if where.path else "union"
        return f"unknown {what} kind {ctx.get('tag')!r}" + suggest(str(ctx.get("tag")), tags, list_known=True)
    if kind == "union_tag_not_found":
        key = str(ctx.get("discriminator", "kind")).strip("'")
        tags = [v for m in _members(where.ann) if _is_model(m) and key in m.model_fields
                for v in _literal_values(m.model_fields[key].annotation)]
        return f"missing '{key}'" + (f"; one of {', '.join(map(str, tags))}" if tags else "")
    if kind == "literal_error":
        allowed = [v.strip(" '\"") for v in re.split(r",| or ", str(ctx.get("expected", ""))) if v.strip()]
        return f"expected {ctx.get('expected')}{_got(value)}" + suggest(str(value), allowed)
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        bound = ctx.get(key)
        return f"expected a number {sign} {bound:g}{_got(value)}" if isinstance(bound, (int, float)) else \
            f"expected a number {sign} {bound}{_got(value)}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}{_got(value)}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx.get('pattern')}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    return str(e["msg"]).replace("Value error, ", "")


def format_errors(err: ValidationError, source: str, root: type[BaseModel],
                  expected: dict[str, str] | None = None) -> str:
    """One line per problem, '<source>: <field path>: <message>'.

    A value that matches no alternative of a union gets one line, "expected <alternatives>, got <value>"
    (`expected` overrides the words per field path); when one alternative got further (a list with a bad
    item), only that alternative's errors are shown.
    """
    expected = expected or {}
    items = [(e, _Where(root, tuple(e["loc"]))) for e in err.errors()]
    deeper = {w.text(w.union_at) for _, w in items if w.union_at is not None and not w.at_branch_root}
    lines, merged = [], set()
    for e, w in items:
        if w.union_at is not None and w.at_branch_root:
            field = w.text(w.union_at)
            if field in deeper or field in merged:
                continue  # another alternative says more, or this union already has its line
            merged.add(field)
            words = expected.get(re.sub(r"\.\d+(?=\.|$)", "", field), describe_type(Union[tuple(w.union_members)]))
            lines.append(f"{source}: {field}: expected {words}{_got(e.get('input'))}")
            continue
        lines.append(f"{source}: {w.text()}: {_message(e, w)}")
    lines = list(dict.fromkeys(lines))
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"{source}: ... and {len(lines) - MAX_LINES + 1} more problems"]
    return "\n".join(lines)


def field_line(path: str, field, indent: str = "", allowed: list | None = None) -> str:
    """`path: description [allowed: ...] (default ...)` for --explain.

    The default is left out when the description already says what it is ("default: per model"), so it is
    never said twice; allowed values are listed for fields restricted to a fixed set.
    """
    description = field.description or ""
    if allowed is None:  # the values the annotation allows, unless the caller knows better
        allowed = []
        for m in _members(field.annotation):
            if get_origin(m) is list:
                m = _strip(get_args(m)[0]) if get_args(m) else m
            allowed += _literal_values(m)
    numeric = any(m in (int, float) for m in _members(field.annotation))
    text = f"{indent}{path}: {description}"
    if allowed:
        text += f" [allowed: {', '.join(map(str, allowed))}{', or a number' if numeric else ''}]"
    if field.is_required():
        text += " (required)"
    elif not re.search(r"\bdefault\b", description):
        default = field.get_default(call_default_factory=True)
        text += f" (default {default:.6g})" if isinstance(default, float) else f" (default {default!r})"
    return text
