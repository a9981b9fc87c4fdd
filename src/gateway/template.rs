//! `google.api.http` path templates: parsing and matching.
//!
//! The grammar (from `google/api/http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! Matching works on the raw (percent-encoded) request path: a custom verb is
//! the text after the last unencoded `:` of the last segment, so a value that
//! contains `:` must be sent as `%3A`. Captured values are percent-decoded; a
//! `**` capture keeps `/` between segments (and `%2F` encoded, the "reserved
//! expansion" of the spec).

use percent_encoding::percent_decode_str;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Single,
    /// `**`: the rest of the path (one or more segments); last only.
    Rest,
}

/// A `{field.path=...}` capture: segments `start..end` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The request field the value goes to, by proto field names.
    pub field_path: Vec<String>,
    /// First template segment of the capture.
    pub start: usize,
    /// One past the last template segment of the capture.
    pub end: usize,
}

impl Variable {
    /// The variable's parameter name in OpenAPI (`tenant.id` → `tenant_id`).
    pub fn openapi_name(&self) -> String {
        self.field_path.join("_")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments after the leading `/`.
    pub segments: Vec<Segment>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
    /// The custom verb (`suspend` for `...:suspend`).
    pub verb: Option<String>,
    /// The template as written.
    pub source: String,
}

/// Why a template is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template `{template}`: {problem}")]
pub struct TemplateError {
    template: String,
    problem: String,
}

/// Captured variables: field path and decoded value.
pub type Captures = Vec<(Vec<String>, String)>;

impl Template {
    /// Parses a template.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let error = |problem: &str| TemplateError { template: source.to_owned(), problem: problem.to_owned() };
        let rest = source.strip_prefix('/').ok_or_else(|| error("must start with `/`"))?;
        // The verb follows the last `:` outside braces.
        let (body, verb) = split_verb(rest);
        if let Some(verb) = verb
            && !is_literal(verb)
        {
            return Err(error("the custom verb must be a plain literal"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = body;
        loop {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| error("unclosed `{`"))?;
                let (spec, after) = (&inner[..close], &inner[close + 1..]);
                let (field, pattern) = spec.split_once('=').unwrap_or((spec, "*"));
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|p| !is_ident(p)) {
                    return Err(error("a variable must name a field path like `tenant.id`"));
                }
                if variables.iter().any(|v: &Variable| v.field_path == field_path) {
                    return Err(error("a field is bound twice"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(parse_plain_segment(part).ok_or_else(|| error("bad segment inside a variable"))?);
                }
                variables.push(Variable { field_path, start, end: segments.len() });
                chars = after;
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let part = &chars[..end];
                if part.contains(['{', '}']) {
                    return Err(error("a variable must be a whole segment"));
                }
                segments.push(parse_plain_segment(part).ok_or_else(|| error("empty or invalid segment"))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some(next) => chars = next,
                None if chars.is_empty() => break,
                None => return Err(error("a variable must be a whole segment")),
            }
        }
        if let Some(position) = segments.iter().position(|s| *s == Segment::Rest)
            && position + 1 != segments.len()
        {
            return Err(error("`**` must be the last segment"));
        }
        Ok(Template { segments, variables, verb: verb.map(str::to_owned), source: source.to_owned() })
    }

    /// Matches a raw request path; returns the captured variables.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let (body, verb) = split_request_verb(rest);
        if verb != self.verb.as_deref() {
            return None;
        }
        let parts: Vec<&str> = body.split('/').collect();
        let fixed = self.segments.len() - usize::from(self.has_rest());
        if parts.len() < fixed
            || (!self.has_rest() && parts.len() != fixed)
            || (self.has_rest() && parts.len() == fixed)
        {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(text) => {
                    if decode(part)? != *text {
                        return None;
                    }
                }
                Segment::Single | Segment::Rest => {
                    if part.is_empty() {
                        return None;
                    }
                }
            }
        }
        if self.has_rest() && parts[fixed..].iter().any(|p| p.is_empty()) {
            return None;
        }
        let mut captures = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let end = if variable.end == self.segments.len() { parts.len() } else { variable.end };
            let value = if variable.end - variable.start == 1 && self.segments[variable.start] != Segment::Rest {
                decode(parts[variable.start])?
            } else {
                // Reserved expansion: `/` separates segments, `%2F` stays encoded.
                let decoded: Option<Vec<String>> =
                    parts[variable.start..end].iter().map(|p| decode(&p.replace("%2F", "%252F"))).collect();
                decoded?.join("/")
            };
            captures.push((variable.field_path.clone(), value));
        }
        Some(captures)
    }

    /// Whether the template ends with `**`.
    pub fn has_rest(&self) -> bool {
        self.segments.last() == Some(&Segment::Rest)
    }

    /// How many literal segments it has; more literals match first.
    pub fn specificity(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }

    /// Whether two templates match exactly the same paths.
    pub fn same_shape(&self, other: &Template) -> bool {
        self.verb == other.verb
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Single, Segment::Single) | (Segment::Rest, Segment::Rest) => true,
                _ => false,
            })
    }

    /// The OpenAPI form: `{field_path}` for each variable (dots become `_`:
    /// OpenAPI tools treat parameter names as identifiers, and `{tenant.id}`
    /// must be the same path as `{tenant_id}`), verbs kept.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push('{');
                out.push_str(&variable.openapi_name());
                out.push('}');
                index = variable.end;
                continue;
            }
            match &self.segments[index] {
                Segment::Literal(text) => out.push_str(text),
                Segment::Single => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            index += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

/// Splits `a/{b=c/*}:verb` into body and verb, ignoring `:` inside braces.
fn split_verb(text: &str) -> (&str, Option<&str>) {
    let mut depth = 0i32;
    let mut last_colon = None;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' => last_colon = None,
            ':' if depth == 0 => last_colon = Some(i),
            _ => {}
        }
    }
    match last_colon {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    }
}

/// Splits a request path into body and verb: the text after the last `:` of
/// the last segment.
fn split_request_verb(path: &str) -> (&str, Option<&str>) {
    let last_segment = path.rfind('/').map_or(0, |i| i + 1);
    match path[last_segment..].rfind(':') {
        Some(i) => (&path[..last_segment + i], Some(&path[last_segment + i + 1..])),
        None => (path, None),
    }
}

fn parse_plain_segment(part: &str) -> Option<Segment> {
    match part {
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Rest),
        _ if is_literal(part) => Some(Segment::Literal(part.to_owned())),
        _ => None,
    }
}

fn is_literal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn decode(part: &str) -> Option<String> {
    percent_decode_str(part).decode_utf8().ok().map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let template = Template::parse(template).unwrap();
        template.matches(path).map(|c| c.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    #[test]
    fn literal_and_variable_segments_match() {
        assert_eq!(capture("/v1/tenants", "/v1/tenants"), Some(vec![]));
        assert_eq!(
            capture("/v1/tenants/{tenant_id}", "/v1/tenants/ten_1"),
            Some(vec![("tenant_id".into(), "ten_1".into())])
        );
        assert_eq!(
            capture("/v1/tenants/{tenant.id}", "/v1/tenants/a%20b"),
            Some(vec![("tenant.id".into(), "a b".into())])
        );
        assert_eq!(capture("/v1/tenants/{tenant_id}", "/v1/tenants/"), None);
        assert_eq!(capture("/v1/tenants/{tenant_id}", "/v1/tenants/a/b"), None);
        assert_eq!(capture("/v1/tenants", "/v1/tenants/x"), None);
    }

    #[test]
    fn custom_verbs_must_match_exactly() {
        let suspend = "/v1/tenants/{tenant_id}:suspend";
        assert_eq!(capture(suspend, "/v1/tenants/t1:suspend"), Some(vec![("tenant_id".into(), "t1".into())]));
        assert_eq!(capture(suspend, "/v1/tenants/t1:resume"), None);
        assert_eq!(capture(suspend, "/v1/tenants/t1"), None);
        // An id with a colon must be encoded; a raw colon reads as a verb.
        assert_eq!(capture("/v1/tenants/{tenant_id}", "/v1/tenants/a:b"), None);
        assert_eq!(
            capture("/v1/tenants/{tenant_id}", "/v1/tenants/a%3Ab"),
            Some(vec![("tenant_id".into(), "a:b".into())])
        );
        assert_eq!(capture("/v1/auth:login", "/v1/auth:login"), Some(vec![]));
    }

    #[test]
    fn wildcards_and_nested_patterns_capture() {
        assert_eq!(
            capture("/v1/{name=files/**}", "/v1/files/a/b%2Fc"),
            Some(vec![("name".into(), "files/a/b%2Fc".into())])
        );
        assert_eq!(capture("/v1/{name=files/**}", "/v1/files"), None);
        assert_eq!(capture("/v1/*/x", "/v1/anything/x"), Some(vec![]));
        assert_eq!(
            capture("/v1/{a}/{b=c/*}:go", "/v1/1/c/2:go"),
            Some(vec![("a".into(), "1".into()), ("b".into(), "c/2".into())])
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["v1/x", "/v1/{x", "/v1/**/x", "/v1/a{x}", "/v1//x", "/v1/{x.}", "/v1/x:", "/v1/{a}/{a}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_openapi_form_names_fields() {
        let template = Template::parse("/v1/tenants/{tenant.id}:suspend").unwrap();
        assert_eq!(template.openapi_path(), "/v1/tenants/{tenant_id}:suspend");
    }
}
