//! Reading `/metrics` as a scraper does: a GET with a chosen `Accept`, a
//! parser for the Prometheus text and OpenMetrics expositions strict enough
//! that a malformed line fails the test, and Prometheus's own tools
//! (`promtool`) as the judge of both formats.

use std::{collections::BTreeMap, net::SocketAddr, process::Stdio};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

/// What Prometheus 2.x sends when it scrapes.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

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
    /// `# TYPE` declarations by family name, as declared (OpenMetrics
    /// declares a counter without its `_total`, the Prometheus text with it).
    pub types: BTreeMap<String, String>,
    /// `# HELP` texts by family name.
    pub help: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses `text`, panicking with the offending line when it is malformed.
    pub fn parse(text: &str) -> Scrape {
        let (mut samples, mut types, mut help) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                if let Some(declaration) = comment.strip_prefix("TYPE ") {
                    let (family, kind) = declaration.split_once(' ').expect("# TYPE <family> <type>");
                    types.insert(family.to_owned(), kind.to_owned());
                } else if let Some(declaration) = comment.strip_prefix("HELP ") {
                    let (family, text) = declaration.split_once(' ').expect("# HELP <family> <text>");
                    help.insert(family.to_owned(), text.to_owned());
                }
                continue;
            }
            samples.push(parse_sample(line).unwrap_or_else(|| panic!("malformed sample line: {line:?}")));
        }
        Scrape { samples, types, help }
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

/// A GET of `path` with `accept` (none when `None`): status, `Content-Type`, body.
pub async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header("host", "test");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.expect("response");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).expect("utf-8 exposition"))
}

/// Whether `promtool` can run here. Without it the promtool checks are
/// skipped, unless `TENANTRY_REQUIRE_PROMTOOL=1` (CI) makes that a failure.
pub fn promtool_available() -> bool {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("TENANTRY_REQUIRE_PROMTOOL").as_deref(),
            Ok("1"),
            "promtool is required (TENANTRY_REQUIRE_PROMTOOL=1) but not installed; Debian: apt-get install prometheus"
        );
        eprintln!("promtool not installed: skipping the promtool checks");
    }
    found
}

/// Runs `promtool` with `args` and `input` on stdin; returns its exit status
/// and everything it printed.
async fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

/// `promtool check metrics`: the Prometheus project's linter for the
/// Prometheus text format (help text, `_total` on counters, base units, …).
/// It reads only that format, which is why OpenMetrics goes to
/// [`promtool_parse_openmetrics`].
pub async fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    promtool(&["check", "metrics"], exposition).await
}

/// Prometheus's OpenMetrics parser, as `promtool tsdb create-blocks-from
/// openmetrics` runs it: it rejects anything that is not valid OpenMetrics
/// (a missing `# EOF`, a counter sample without `_total`, metadata after
/// samples, …). That importer wants a timestamp on every sample, so one is
/// appended; the blocks go to a temporary directory and are thrown away.
pub async fn promtool_parse_openmetrics(exposition: &str) -> (bool, String) {
    let stamped: String = exposition
        .lines()
        .map(|line| if line.starts_with('#') { format!("{line}\n") } else { format!("{line} 1700000000\n") })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scrape.om");
    std::fs::write(&input, stamped).unwrap();
    let blocks = dir.path().join("blocks");
    let args = ["tsdb", "create-blocks-from", "openmetrics", input.to_str().unwrap(), blocks.to_str().unwrap()];
    promtool(&args, "").await
}

#[test]
fn the_parser_reads_labels_escapes_and_infinities() {
    let scrape = Scrape::parse(
        "# HELP x A counter.\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nh_bucket{le=\"+Inf\"} 2\nplain 1.5\n# EOF\n",
    );
    assert_eq!(scrape.value("x_total", &[("a", "1"), ("b", "q\"uote")]), Some(3.0));
    assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(scrape.value("plain", &[]), Some(1.5));
    assert_eq!(scrape.types["x"], "counter");
    assert_eq!(scrape.help["x"], "A counter.");
}
