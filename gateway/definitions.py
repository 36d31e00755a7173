"""Predictors as code: load YAML definitions from a file or a folder.

Every file is parsed and validated before anything is written; one bad file means nothing
is loaded, and the error names the file and the field. Re-loading updates predictors in
place; a changed input schema or output spec bumps the schema version. The `routing` block
is the initial flag only: once a predictor exists, operators own its routing."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from django.db import transaction

from .history import change_reason
from .models import Predictor, RoutingPolicy
from .schema import FieldError, definition_validate


class DefinitionError(Exception):
    def __init__(self, path: str, errors: list[FieldError]):
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  {e.field or '(file)'}: {e.message}" for e in errors)
        super().__init__(f"{path}:\n{lines}")


@dataclass
class LoadResult:
    slug: str
    path: str
    action: str  # created | updated | unchanged
    schema_version: int


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.is_file():
        return [path]
    raise DefinitionError(str(path), [FieldError("", "no such file or folder")])


def definition_parse(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(str(path), [FieldError("", f"cannot read: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(str(path), [FieldError("", f"not valid YAML: {exc}")]) from None
    errors = definition_validate(data)
    if errors:
        raise DefinitionError(str(path), errors)
    data["_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return data


def predictors_load(path: str | Path) -> list[LoadResult]:
    files = _files(Path(path))
    if not files:
        raise DefinitionError(str(path), [FieldError("", "no .yaml or .yml files found")])
    parsed: list[tuple[Path, dict]] = []
    seen: dict[str, Path] = {}
    for file in files:
        data = definition_parse(file)
        if data["slug"] in seen:
            raise DefinitionError(str(file), [FieldError("slug", f"{data['slug']!r} is also defined in {seen[data['slug']]}")])
        seen[data["slug"]] = file
        parsed.append((file, data))
    results = []
    with transaction.atomic():
        for file, data in parsed:
            results.append(_upsert(file, data))
    return results


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _without_log(schema: dict) -> dict:
    # Whether a field is logged changes nothing a model learned: no new schema version.
    return {name: {k: v for k, v in spec.items() if k != "log"} if isinstance(spec, dict) else spec for name, spec in schema.items()}


def _upsert(file: Path, data: dict) -> LoadResult:
    fields = {
        "description": data.get("description", ""),
        "input_schema": data["input"],
        "field_order": list(data["input"]),
        "output_spec": data["output"],
        "rules": data.get("rules", []),
        "sensitive_attribute": data.get("sensitive_attribute") or "",
        "reviews_required": data.get("reviews_required", 1),
        "appeal_window_days": data.get("appeal_window_days", 30),
        "training": data.get("training", {}),
        "gates": data.get("gates", {}),
        "auto_promote": data.get("auto_promote", False),
        "definition_sha256": data["_sha256"],
        "source_path": str(file),
    }
    predictor = Predictor.objects.select_for_update().filter(slug=data["slug"]).first()
    if predictor is None:
        predictor = Predictor(slug=data["slug"], **fields)
        predictor._change_reason = change_reason(f"created from {file}")
        predictor.save()
        RoutingPolicy.objects.create(predictor=predictor, **data.get("routing", {}))
        return LoadResult(predictor.slug, str(file), "created", predictor.schema_version)
    schema_changed = (
        predictor.field_order != fields["field_order"]
        or _canonical(_without_log(predictor.input_schema)) != _canonical(_without_log(fields["input_schema"]))
        or _canonical(predictor.output_spec) != _canonical(fields["output_spec"])
    )
    changed = schema_changed or any(
        _canonical(getattr(predictor, k)) != _canonical(v) for k, v in fields.items() if k != "source_path"
    )
    if not changed:
        return LoadResult(predictor.slug, str(file), "unchanged", predictor.schema_version)
    for key, value in fields.items():
        setattr(predictor, key, value)
    if schema_changed:
        predictor.schema_version += 1
    predictor._change_reason = change_reason(f"reloaded from {file}")
    predictor.save()
    RoutingPolicy.objects.get_or_create(predictor=predictor)
    return LoadResult(predictor.slug, str(file), "updated", predictor.schema_version)
