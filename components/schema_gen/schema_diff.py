"""Field-by-field differences between two tensorflow_metadata Schemas, in words."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from tensorflow_metadata.proto.v0 import schema_pb2

UNSET = "(unset)"


def _flatten(value, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, inner in enumerate(value):
            _flatten(inner, f"{prefix}[{i}]", out)
    else:
        out[prefix] = str(value)


def _fields(msg) -> dict[str, str]:
    out: dict[str, str] = {}
    _flatten(MessageToDict(msg, preserving_proto_field_name=True), "", out)
    return out


def schema_differences(curated: schema_pb2.Schema, inferred: schema_pb2.Schema) -> list[str]:
    """One line per difference between `curated` and `inferred`, sorted; empty when equal.

    Features are matched by name; within a feature (and for schema-level fields other than
    `feature`), every set field is compared, e.g.
    `feature label: int_domain.max: curated 9, inferred (unset)`.
    """
    lines = []
    cur_feats = {f.name: f for f in curated.feature}
    inf_feats = {f.name: f for f in inferred.feature}
    for name in sorted(set(cur_feats) | set(inf_feats)):
        if name not in inf_feats:
            lines.append(f"feature {name}: in the curated schema only (not seen in the statistics)")
            continue
        if name not in cur_feats:
            lines.append(
                f"feature {name}: in the inferred schema only (in the data, not in the curated schema)"
            )
            continue
        lines += [
            f"feature {name}: {line}"
            for line in _diff(_fields(cur_feats[name]), _fields(inf_feats[name]))
            if not line.startswith("name:")
        ]
    cur_top, inf_top = schema_pb2.Schema(), schema_pb2.Schema()
    cur_top.CopyFrom(curated)
    inf_top.CopyFrom(inferred)
    del cur_top.feature[:]
    del inf_top.feature[:]
    lines += [f"schema: {line}" for line in _diff(_fields(cur_top), _fields(inf_top))]
    return lines


def _diff(curated: dict[str, str], inferred: dict[str, str]) -> list[str]:
    return [
        f"{key}: curated {curated.get(key, UNSET)}, inferred {inferred.get(key, UNSET)}"
        for key in sorted(set(curated) | set(inferred))
        if curated.get(key) != inferred.get(key)
    ]
