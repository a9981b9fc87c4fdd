//! `GET /docs`: the API reference, rendered from the OpenAPI document into
//! one self-contained HTML page, with a try-it-out form under every
//! operation.
//!
//! The reference itself is static HTML (operations grouped by service with
//! their parameters, bodies and responses, then every schema), readable with
//! scripts off, the way ReDoc users know it. The try-it-out forms are
//! rendered here too, with the example body prefilled; a small script of our
//! own (`docs/tryit.js`, inlined) sends them with the credential entered in
//! the Authorize panel and shows status, headers and body. Nothing is loaded
//! from anywhere else: no CDN, no fonts, no external scripts or styles, so
//! the page works offline and on air-gapped hosts. The layout fits a 390 px
//! wide phone screen without horizontal scrolling. `.ci/docs-browser` checks
//! all of this in a real headless Chromium.

use serde_json::Value;

/// The page's stylesheet (inlined).
const STYLE: &str = include_str!("docs/style.css");
/// The try-it-out script (inlined).
const SCRIPT: &str = include_str!("docs/tryit.js");

/// Renders the reference page.
pub fn render(spec: &Value) -> String {
    let mut html = String::with_capacity(512 * 1024);
    html.push_str(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>Tenantry API reference</title><style>"
    ));
    html.push_str(STYLE);
    html.push_str("</style></head><body>");
    let info = &spec["info"];
    html.push_str(&format!(
        "<header><h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> \
         (OpenAPI 3.1). Authenticate with <code>Authorization: Bearer &lt;token or API key&gt;</code> or \
         <code>x-api-key</code>.</p></header>",
        text(&info["title"]),
        text(&info["version"]),
        rich(&info["description"])
    ));
    html.push_str(AUTHORIZE_PANEL);
    let tags: Vec<&Value> = spec["tags"].as_array().map(|t| t.iter().collect()).unwrap_or_default();
    html.push_str("<nav>");
    for tag in &tags {
        let name = text(&tag["name"]);
        html.push_str(&format!("<a href=\"#{name}\">{name}</a>"));
    }
    html.push_str("<a href=\"#schemas\">Schemas</a></nav><main>");
    let empty = serde_json::Map::new();
    let paths = spec["paths"].as_object().unwrap_or(&empty);
    for tag in &tags {
        let name = text(&tag["name"]);
        html.push_str(&format!("<h2 id=\"{name}\">{name}</h2><p>{}</p>", rich(&tag["description"])));
        for (path, item) in paths {
            for (verb, operation) in item.as_object().unwrap_or(&empty) {
                if operation["tags"][0].as_str() != Some(name.as_str()) {
                    continue;
                }
                operation_html(&mut html, verb, path, operation);
            }
        }
    }
    html.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap_or(&empty) {
        html.push_str(&format!("<h3 id=\"schema-{0}\">{0}</h3><p>{1}</p>", escape(name), rich(&schema["description"])));
        if let Some(values) = schema["enum"].as_array() {
            let list: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", text(v))).collect();
            html.push_str(&format!("<p>One of: {}</p>", list.join(", ")));
        }
        if let Some(properties) = schema["properties"].as_object() {
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            html.push_str("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
            for (field, property) in properties {
                html.push_str(&format!(
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(field),
                    flags(required.contains(&field.as_str()), property["readOnly"] == true),
                    type_html(property),
                    rich(&property["description"])
                ));
            }
            html.push_str("</table>");
        }
    }
    html.push_str("</main><script>");
    html.push_str(SCRIPT);
    html.push_str("</script></body></html>");
    html
}

/// The credential form the try-it-out calls use (kept in the page's memory only).
const AUTHORIZE_PANEL: &str = concat!(
    "<section id=\"authorize\" class=\"panel\"><h2>Authorize</h2>",
    "<p>Calls made from this page carry this credential. It stays in this tab's memory and is sent only to this \
     server.</p>",
    "<form id=\"auth-form\" autocomplete=\"off\">",
    "<label>Scheme <select name=\"scheme\"><option value=\"bearer\">Authorization: Bearer (access token or API key)\
     </option><option value=\"apikey\">x-api-key (API key)</option></select></label>",
    "<label>Credential <input name=\"credential\" type=\"password\" placeholder=\"tnty_… or a JWT\"></label>",
    "<label>Tenant <small>x-tenant-id, for platform admins; id or slug</small>",
    "<input name=\"tenant\" placeholder=\"acme\"></label>",
    "<p class=\"buttons\"><button type=\"submit\">Authorize</button> <button type=\"button\" id=\"auth-clear\">Clear\
     </button></p>",
    "<p id=\"auth-status\" role=\"status\">Not authorized: calls are sent without a credential.</p>",
    "</form></section>"
);

fn operation_html(html: &mut String, verb: &str, path: &str, operation: &Value) {
    let public = operation["security"].as_array().is_some_and(|s| s.is_empty());
    html.push_str(&format!(
        "<div class=\"op\" id=\"{}\"><p class=\"head\"><span class=\"verb {verb}\">{verb}</span> <code>{}</code></p>\
         <p>{}</p>",
        text(&operation["operationId"]),
        escape(path),
        rich(&operation["description"])
    ));
    if public {
        html.push_str("<p><em>Public: no credential needed.</em></p>");
    }
    let parameters: Vec<&Value> = operation["parameters"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
    if !parameters.is_empty() {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>");
        for parameter in &parameters {
            html.push_str(&format!(
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&parameter["name"]),
                flags(parameter["required"] == true, false),
                text(&parameter["in"]),
                type_html(&parameter["schema"]),
                rich(&parameter["description"])
            ));
        }
        html.push_str("</table>");
    }
    let body = &operation["requestBody"]["content"]["application/json"];
    if !body.is_null() {
        html.push_str(&format!("<p>Body (required): {}</p>", type_html(&body["schema"])));
    }
    let ok = &operation["responses"]["200"]["content"];
    let streaming = ok["application/json"].is_null();
    let schema = if streaming { &ok["application/x-ndjson"]["schema"] } else { &ok["application/json"]["schema"] };
    let note = if streaming { " (a stream: NDJSON or SSE)" } else { "" };
    html.push_str(&format!(
        "<p>Response: {}{note}; errors: <a href=\"#schema-Status\">Status</a></p>",
        type_html(schema)
    ));
    try_it_html(html, verb, path, &parameters, body, public, streaming);
    html.push_str("</div>");
}

/// The try-it-out form of one operation: one input per parameter (the
/// tenant header comes from the Authorize panel) and the body, prefilled
/// with the operation's example.
fn try_it_html(
    html: &mut String,
    verb: &str,
    path: &str,
    parameters: &[&Value],
    body: &Value,
    public: bool,
    streaming: bool,
) {
    let tenant_scoped = parameters.iter().any(|p| p["name"] == "x-tenant-id");
    html.push_str(&format!(
        "<details class=\"try\"><summary>Try it</summary><form class=\"tryit\" data-method=\"{}\" data-path=\"{}\" \
         data-public=\"{public}\" data-tenant=\"{tenant_scoped}\" data-stream=\"{streaming}\">",
        escape(&verb.to_ascii_uppercase()),
        escape(path)
    ));
    for parameter in parameters.iter().filter(|p| p["name"] != "x-tenant-id") {
        let name = text(&parameter["name"]);
        let location = text(&parameter["in"]);
        let required = parameter["required"] == true;
        let schema = &parameter["schema"];
        let hint = match (schema["type"].as_str(), schema["enum"].is_array(), schema["$ref"].as_str()) {
            (Some("array"), _, _) => "comma-separated values".to_owned(),
            (_, true, _) | (_, _, Some(_)) => "an enum name".to_owned(),
            (Some(kind), _, _) => match schema["format"].as_str() {
                Some(format) => format!("{kind}, {format}"),
                None => kind.to_owned(),
            },
            _ => String::new(),
        };
        html.push_str(&format!(
            "<label>{name} <small>{location}{}</small><input name=\"{name}\" data-in=\"{location}\" \
             data-array=\"{}\" placeholder=\"{}\"{}></label>",
            if required { ", required" } else { "" },
            schema["type"] == "array",
            escape(&hint),
            if required { " required" } else { "" }
        ));
    }
    if !body.is_null() {
        let example = match &body["example"] {
            Value::Null => "{}".to_owned(),
            example => serde_json::to_string_pretty(example).unwrap_or_default(),
        };
        let rows = example.lines().count().clamp(3, 14);
        html.push_str(&format!(
            "<label>Body <small>JSON</small><textarea name=\"body\" rows=\"{rows}\" spellcheck=\"false\">{}</textarea>\
             </label>",
            escape(&example)
        ));
    }
    html.push_str(concat!(
        "<p class=\"buttons\"><button type=\"submit\">Send</button></p>",
        "<div class=\"result\" hidden><p class=\"status\" role=\"status\"></p>",
        "<h4>Response headers</h4><pre class=\"headers\"></pre><h4>Response body</h4><pre class=\"body\"></pre></div>",
        "</form></details>"
    ));
}

/// Marks for a field or parameter: required, read-only.
fn flags(required: bool, read_only: bool) -> &'static str {
    match (required, read_only) {
        (true, _) => " <span class=\"flag\">required</span>",
        (false, true) => " <span class=\"flag ro\">read-only</span>",
        _ => "",
    }
}

/// A schema's type, linking named schemas.
fn type_html(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    match schema["type"].as_str() {
        Some("array") => format!("array of {}", type_html(&schema["items"])),
        Some("object") if schema["additionalProperties"].is_object() => {
            format!("map of string to {}", type_html(&schema["additionalProperties"]))
        }
        Some(kind) => match schema["format"].as_str() {
            Some(format) => format!("{kind} ({})", escape(format)),
            None => kind.to_owned(),
        },
        None if schema["oneOf"].is_array() => "number".to_owned(),
        None => "any".to_owned(),
    }
}

fn text(value: &Value) -> String {
    escape(value.as_str().unwrap_or_default())
}

/// Description text: escaped, with `backticks` rendered as `<code>` (a lone
/// backtick stays as it is).
fn rich(value: &Value) -> String {
    let escaped = text(value);
    let pieces: Vec<&str> = escaped.split('`').collect();
    let mut out = String::with_capacity(escaped.len() + 16);
    for (index, piece) in pieces.iter().enumerate() {
        let inside = index % 2 == 1;
        if inside && index == pieces.len() - 1 {
            out.push('`');
            out.push_str(piece);
        } else if inside {
            out.push_str("<code>");
            out.push_str(piece);
            out.push_str("</code>");
        } else {
            out.push_str(piece);
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backticks_become_code_and_html_is_escaped() {
        assert_eq!(
            rich(&json!("Use `x-tenant-id` or `<id>`.")),
            "Use <code>x-tenant-id</code> or <code>&lt;id&gt;</code>."
        );
        assert_eq!(rich(&json!("a lone ` stays")), "a lone ` stays");
        assert_eq!(rich(&json!("`a` and ` b")), "<code>a</code> and ` b");
    }

    #[test]
    fn the_page_has_a_prefilled_form_per_operation_and_loads_nothing_from_elsewhere() {
        let spec = crate::gateway::openapi::document(
            &crate::gateway::routes::RouteTable::embedded().unwrap(),
            &crate::policy::PolicyTable::embedded().unwrap(),
        );
        let html = render(&spec);
        let operations: usize = spec["paths"].as_object().unwrap().values().map(|i| i.as_object().unwrap().len()).sum();
        assert_eq!(html.matches("<form class=\"tryit\"").count(), operations);
        assert!(html.contains("data-method=\"POST\" data-path=\"/v1/tenants\""));
        assert!(
            html.contains("&quot;slug&quot;: &quot;acme&quot;"),
            "CreateTenant's body is prefilled from its example"
        );
        assert!(html.contains("<code>x-tenant-id</code>"), "backticks in descriptions render as code");
        for external in [" src=", "<link", "@import", "url("] {
            assert!(!html.contains(external), "the page loads something with `{external}`");
        }
    }
}
