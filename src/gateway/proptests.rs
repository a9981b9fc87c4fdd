//! Property tests: the path matcher, the template parser and the JSON
//! transcoder never panic, whatever the input.

use http::Method;
use proptest::prelude::*;

use super::{
    routes::{Lookup, RouteTable},
    template::Template,
    transcode,
};

fn table() -> &'static RouteTable {
    static TABLE: std::sync::OnceLock<RouteTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| RouteTable::embedded().expect("embedded routes"))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PATCH), Just(Method::PUT), Just(Method::DELETE)]
}

/// Paths made of API-ish pieces, so lookups often get deep into templates.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("v1".to_owned()),
        Just("tenants".to_owned()),
        Just("jobs".to_owned()),
        Just("users".to_owned()),
        Just("roles".to_owned()),
        Just("x:suspend".to_owned()),
        Just("%3A%2F%zz".to_owned()),
        Just(String::new()),
        "[a-zA-Z0-9_.~:%-]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..7).prop_map(|pieces| format!("/{}", pieces.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_path_matcher_never_panics(method in method(), path in path()) {
        let _ = table().lookup(&method, &path);
    }

    #[test]
    fn the_template_parser_never_panics(text in "[/a-z{}=*.:_]{0,40}") {
        if let Ok(template) = Template::parse(&text) {
            let _ = template.matches(&text);
            let _ = template.openapi_path();
        }
    }

    #[test]
    fn the_transcoder_never_panics(
        method in method(),
        path in path(),
        query in prop::collection::vec(("[a-zA-Z_.]{1,20}", any::<String>()), 0..4),
        body in prop_oneof![
            any::<String>(),
            Just(r#"{"tenant": {"labels": {"a": 1}}, "updateMask": 3}"#.to_owned()),
            Just(r#"{"pageSize": "9999999999999", "state": 7, "plan": null}"#.to_owned()),
            "\\{\"[a-zA-Z_]{1,12}\": (null|true|1|\"x\"|\\[\\]|\\{\\})\\}",
        ],
    ) {
        for route in table().iter() {
            let _ = table().lookup(&method, &path);
            let captures = vec![];
            let _ = transcode::request_message(route, &captures, &query, body.as_bytes(), true);
        }
    }

    #[test]
    fn found_routes_transcode_without_panicking(method in method(), path in path(), body in any::<String>()) {
        if let Lookup::Found(route, captures) = table().lookup(&method, &path) {
            let _ = transcode::request_message(route, &captures, &[], body.as_bytes(), false);
        }
    }
}
