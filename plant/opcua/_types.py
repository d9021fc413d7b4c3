"""Tag data types as OPC-UA variant types, shared by the OPC-UA agent and the twin's server."""

from __future__ import annotations

from asyncua import ua

VARIANT_TYPES: dict[str, ua.VariantType] = {
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}

#: The DataType attribute (a node id in namespace 0) a node of each tag data type has.
DATA_TYPE_IDS: dict[str, ua.NodeId] = {k: ua.NodeId.from_string(f"i={v.value}") for k, v in VARIANT_TYPES.items()}
