//! Conversion between `google.protobuf.Struct` and `serde_json`.
//!
//! Struct numbers are doubles. Integral numbers whose magnitude is at most
//! 2^53 come back as JSON integers, so ids and counts survive a round trip;
//! larger integers cannot be represented exactly and belong in strings.

use prost_types::{ListValue, Struct, Value, value::Kind};

/// The largest integer a double holds exactly (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Converts a Struct into a JSON object.
pub fn struct_to_json(value: &Struct) -> serde_json::Map<String, serde_json::Value> {
    value
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), value_to_json(value)))
        .collect()
}

/// Converts a protobuf Value into JSON.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(value_to_json).collect())
        }
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
        // Exact: the magnitude is within the 53-bit mantissa.
        serde_json::Value::from(n as i64)
    } else {
        // NaN and infinities have no JSON form and become null.
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// The path (such as `items[2].price`) of the first number in `value` that
/// JSON cannot hold (NaN or an infinity), if any.
pub fn first_non_finite(value: &Struct) -> Option<String> {
    value
        .fields
        .iter()
        .find_map(|(key, value)| non_finite_in(value).map(|inner| format!("{key}{inner}")))
}

/// Where under `value` a non-finite number is, as a path suffix.
fn non_finite_in(value: &Value) -> Option<String> {
    match &value.kind {
        Some(Kind::NumberValue(n)) if !n.is_finite() => Some(String::new()),
        Some(Kind::StructValue(inner)) => first_non_finite(inner).map(|path| format!(".{path}")),
        Some(Kind::ListValue(list)) => {
            list.values.iter().enumerate().find_map(|(index, item)| {
                non_finite_in(item).map(|path| format!("[{index}]{path}"))
            })
        }
        _ => None,
    }
}

/// Converts a JSON object into a Struct.
pub fn json_to_struct(object: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

/// Converts any JSON value into a protobuf Value.
pub fn json_to_value(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_non_finite_number_is_found_by_its_path() {
        let mut payload = json_to_struct(
            json!({"items": [{"price": 1}, {"price": 2}]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(first_non_finite(&payload), None);
        let Some(Kind::ListValue(items)) = &mut payload.fields.get_mut("items").unwrap().kind
        else {
            unreachable!("items is a list")
        };
        let Some(Kind::StructValue(second)) = &mut items.values[1].kind else {
            unreachable!("an item is an object")
        };
        second.fields.insert(
            "price".into(),
            Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        assert_eq!(
            first_non_finite(&payload).as_deref(),
            Some("items[1].price")
        );
    }

    #[test]
    fn integers_up_to_2_pow_53_round_trip_as_integers() {
        let original = json!({"id": 9_007_199_254_740_992_i64, "neg": -42, "ratio": 0.5,
            "nested": {"list": [1, "two", null, true]}});
        let back = serde_json::Value::Object(struct_to_json(&json_to_struct(
            original.as_object().unwrap(),
        )));
        assert_eq!(back, original);
        assert!(back["id"].is_i64(), "integral numbers must stay integers");
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let value = Value {
            kind: Some(Kind::NumberValue(f64::INFINITY)),
        };
        assert_eq!(value_to_json(&value), serde_json::Value::Null);
    }
}
