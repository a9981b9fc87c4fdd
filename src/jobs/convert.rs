//! Conversions between protobuf well-known types (`Struct`, `Duration`) and
//! the JSON and std types the queue stores (timestamps: [`crate::proto::timestamp`]).

use std::time::Duration;

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// A `Struct` as a JSON object.
pub fn struct_to_json(value: &Struct) -> Json {
    Json::Object(value.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Integral values stay integers, so `{"n": 3}` round-trips as written.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// A JSON value as a `Struct`; a non-object is wrapped as `{"value": …}`.
pub fn json_to_struct(value: &Json) -> Struct {
    match value {
        Json::Object(map) => object_to_struct(map),
        other => Struct { fields: [("value".to_owned(), json_to_value(other))].into_iter().collect() },
    }
}

fn object_to_struct(map: &Map<String, Json>) -> Struct {
    Struct { fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

fn json_to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue { values: items.iter().map(json_to_value).collect() }),
        Json::Object(map) => Kind::StructValue(object_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A protobuf `Duration` as a std duration; `None` when negative or invalid.
pub fn from_duration(value: &prost_types::Duration) -> Option<Duration> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(value.seconds as u64, value.nanos as u32))
}

/// A std duration as a protobuf `Duration`.
pub fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: value.as_secs() as i64, nanos: value.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let json = serde_json::json!({"a": 1, "b": [true, null, "x", 1.5], "c": {"d": -2}});
        assert_eq!(struct_to_json(&json_to_struct(&json)), json);
    }

    #[test]
    fn negative_durations_are_refused() {
        assert!(from_duration(&prost_types::Duration { seconds: -1, nanos: 0 }).is_none());
        assert_eq!(from_duration(&duration(Duration::from_millis(1500))), Some(Duration::from_millis(1500)));
    }
}
