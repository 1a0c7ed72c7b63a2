//! Property tests of what the server decodes from strangers: any bytes as
//! an `AgentMessage` or a `Struct`, and any JSON through `Struct` and back.

use proptest::prelude::*;
use prost::Message;
use prost_types::Struct;
use serde_json::Value;
use taskplane_proto::json::{json_to_struct, struct_to_json};
use taskplane_proto::v1::AgentMessage;

/// Any JSON value: integers within 2^53, finite floats, any strings, nested
/// arrays and objects.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Equal as JSON means: numbers by value (a float with no fraction comes
/// back as an integer), everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_object_survives_struct_and_the_wire(
        object in prop::collection::btree_map(".{0,8}", any_json(), 0..8)
    ) {
        let object: serde_json::Map<String, Value> = object.into_iter().collect();
        let wire = json_to_struct(&object).encode_to_vec();
        let back = struct_to_json(&Struct::decode(wire.as_slice()).expect("our own encoding decodes"));
        prop_assert!(same(&Value::Object(object.clone()), &Value::Object(back.clone())), "{object:?} became {back:?}");
    }

    #[test]
    fn any_bytes_decode_to_an_error_or_a_message_that_converts(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Never a panic: either a decode error or a value.
        let _ = AgentMessage::decode(bytes.as_slice());
        if let Ok(value) = Struct::decode(bytes.as_slice()) {
            // NaN, infinities and missing kinds become null; after one
            // conversion the value is stable.
            let once = struct_to_json(&value);
            let twice = struct_to_json(&json_to_struct(&once));
            prop_assert!(same(&Value::Object(once), &Value::Object(twice)));
        }
    }
}

#[test]
fn nesting_beyond_the_decoder_limit_is_refused_not_overflowed() {
    let mut value = serde_json::json!({"leaf": true});
    for _ in 0..500 {
        value = serde_json::json!({ "child": value });
    }
    let wire = json_to_struct(value.as_object().unwrap()).encode_to_vec();
    let error = Struct::decode(wire.as_slice()).expect_err("too deep to decode");
    assert!(error.to_string().contains("recursion limit"), "{error}");
}
