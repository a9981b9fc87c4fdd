//! `GET /docs`: a readable, self-contained HTML reference rendered from the
//! OpenAPI document (no scripts, no CDN, inline CSS): operations grouped by
//! service with their parameters, bodies and responses, then every schema.

use serde_json::Value;

/// Renders the reference page.
pub fn render(spec: &Value) -> String {
    let mut html = String::with_capacity(256 * 1024);
    html.push_str(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>Tenantry API reference</title><style>",
        "body{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:0 auto;padding:1rem 2rem;color:#1d2330}",
        "code,pre{font-family:ui-monospace,monospace;font-size:13px}h2{border-bottom:2px solid #dde;margin-top:2.5rem}",
        ".op{border:1px solid #dde;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}",
        ".verb{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}",
        ".get{color:#0a6}.post{color:#06c}.put{color:#a60}.patch{color:#a0a}.delete{color:#c00}",
        "table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border-top:1px solid #eef;padding:.25rem .5rem;",
        "text-align:left;vertical-align:top}th{font-weight:600}nav a{margin-right:1rem}",
        "</style></head><body>"
    ));
    let info = &spec["info"];
    html.push_str(&format!(
        "<h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> \
         (OpenAPI 3.1). Authenticate with <code>Authorization: Bearer &lt;token or API key&gt;</code> or \
         <code>x-api-key</code>.</p>",
        text(&info["title"]),
        text(&info["version"]),
        text(&info["description"])
    ));
    let tags: Vec<&Value> = spec["tags"].as_array().map(|t| t.iter().collect()).unwrap_or_default();
    html.push_str("<nav>");
    for tag in &tags {
        let name = text(&tag["name"]);
        html.push_str(&format!("<a href=\"#{name}\">{name}</a>"));
    }
    html.push_str("<a href=\"#schemas\">Schemas</a></nav>");
    let empty = serde_json::Map::new();
    let paths = spec["paths"].as_object().unwrap_or(&empty);
    for tag in &tags {
        let name = text(&tag["name"]);
        html.push_str(&format!("<h2 id=\"{name}\">{name}</h2><p>{}</p>", text(&tag["description"])));
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
        html.push_str(&format!("<h3 id=\"schema-{0}\">{0}</h3><p>{1}</p>", escape(name), text(&schema["description"])));
        if let Some(values) = schema["enum"].as_array() {
            let list: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", text(v))).collect();
            html.push_str(&format!("<p>One of: {}</p>", list.join(", ")));
        }
        if let Some(properties) = schema["properties"].as_object() {
            html.push_str("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
            for (field, property) in properties {
                html.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    escape(field),
                    type_html(property),
                    text(&property["description"])
                ));
            }
            html.push_str("</table>");
        }
    }
    html.push_str("</body></html>");
    html
}

fn operation_html(html: &mut String, verb: &str, path: &str, operation: &Value) {
    html.push_str(&format!(
        "<div class=\"op\" id=\"{}\"><p><span class=\"verb {verb}\">{verb}</span> <code>{}</code></p><p>{}</p>",
        text(&operation["operationId"]),
        escape(path),
        text(&operation["description"])
    ));
    if operation["security"].as_array().is_some_and(|s| s.is_empty()) {
        html.push_str("<p><em>Public: no credential needed.</em></p>");
    }
    if let Some(parameters) = operation["parameters"].as_array().filter(|p| !p.is_empty()) {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>");
        for parameter in parameters {
            html.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&parameter["name"]),
                text(&parameter["in"]),
                type_html(&parameter["schema"]),
                text(&parameter["description"])
            ));
        }
        html.push_str("</table>");
    }
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    if !body.is_null() {
        html.push_str(&format!("<p>Body: {}</p>", type_html(body)));
    }
    let ok = &operation["responses"]["200"]["content"];
    let schema = if ok["application/json"].is_null() {
        &ok["application/x-ndjson"]["schema"]
    } else {
        &ok["application/json"]["schema"]
    };
    let streaming = if ok["application/json"].is_null() { " (a stream: NDJSON or SSE)" } else { "" };
    html.push_str(&format!(
        "<p>Response: {}{streaming}; errors: <a href=\"#schema-Status\">Status</a></p></div>",
        type_html(schema)
    ));
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
