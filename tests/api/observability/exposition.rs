//! A small parser for the Prometheus/OpenMetrics text exposition, strict
//! enough that a malformed line fails the test that scrapes it.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations by family name.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses `text`, panicking with the offending line when it is malformed.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                if let Some(declaration) = comment.strip_prefix("TYPE ") {
                    let (family, kind) = declaration.split_once(' ').expect("# TYPE <family> <type>");
                    types.insert(family.to_owned(), kind.to_owned());
                }
                continue;
            }
            samples.push(parse_sample(line).unwrap_or_else(|| panic!("malformed sample line: {line:?}")));
        }
        Scrape { samples, types }
    }

    /// The value of the one sample named `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut found = self.samples.iter().filter(|s| s.name == name && s.labels == wanted);
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name}{labels:?} appears twice");
        Some(sample.value)
    }

    /// Every sample named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            let (start, c) = chars.next()?;
            if c == '}' {
                end = start;
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = after[start..].find('=')? + start;
            let key = after[start..eq].to_owned();
            while chars.peek()?.0 < eq {
                chars.next();
            }
            chars.next(); // '='
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
        rest = &after[end + 1..];
    }
    let value = rest.trim().split(' ').next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

#[test]
fn the_parser_reads_labels_escapes_and_infinities() {
    let scrape = Scrape::parse(
        "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nh_bucket{le=\"+Inf\"} 2\nplain 1.5\n# EOF\n",
    );
    assert_eq!(scrape.value("x_total", &[("a", "1"), ("b", "q\"uote")]), Some(3.0));
    assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(scrape.value("plain", &[]), Some(1.5));
    assert_eq!(scrape.types["x"], "counter");
}
