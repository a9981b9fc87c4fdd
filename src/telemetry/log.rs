//! JSON log lines, built without serde and written off the calling thread:
//! the production log format, and the one per-call cost every call pays
//! (its `call finished` line).
//!
//! [`JsonLog`] is a `tracing` layer that writes the same lines as
//! `tracing_subscriber`'s JSON format with flattened events and the current
//! span (`{"timestamp","level","message",…fields,"target","span":{"name",…}}`),
//! but keeps each span's fields as ready-made JSON fragments, so recording a
//! field later (the call's tenant, its principal) replaces one fragment
//! instead of re-parsing the span's JSON, and formats each line into a
//! reused per-thread buffer.
//!
//! Lines go to a [`Sink`]: a buffer that calls append to under a short lock,
//! and one writer thread that takes the whole buffer and writes it to stderr
//! in one system call, a few milliseconds after the first line of a batch.
//! When stderr cannot keep up and the buffer holds [`MAX_BUFFERED`] bytes,
//! `INFO` and quieter lines are dropped and counted (the writer reports the
//! count in a `WARN` line); `WARN` and `ERROR` lines are kept up to four
//! times that, which only a stderr that takes nothing at all reaches.
//! [`flush`] writes what is buffered before the process exits.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::Write as _,
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{layer::Context, registry::LookupSpan};

/// Bytes the sink holds before it drops `INFO` and quieter lines.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// Bytes it holds before it drops `WARN` and `ERROR` lines too: only when
/// stderr has stopped taking anything (a pipe nobody reads), so memory stays
/// bounded even then.
pub const MAX_BUFFERED_ERRORS: usize = 4 * MAX_BUFFERED;

/// How long the writer lets a batch gather after its first line.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Bytes each of the sink's two buffers keeps between batches.
const BATCH_CAPACITY: usize = 64 * 1024;

/// The layer (see the module docs).
pub struct JsonLog {
    sink: Arc<Sink>,
}

impl JsonLog {
    /// A layer writing to the process's stderr sink (started on first use).
    pub fn stderr() -> Self {
        JsonLog { sink: STDERR.get_or_init(|| Sink::start(Box::new(std::io::stderr()))).clone() }
    }

    /// A layer writing to `out`, from a writer thread of its own (benchmarks
    /// format every line and discard it).
    pub fn writing_to(out: Box<dyn std::io::Write + Send>) -> Self {
        JsonLog { sink: Sink::start(out) }
    }
}

/// A span's fields, each a JSON fragment (`"key":value`) in recording order.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, String)>);

impl SpanFields {
    fn set(&mut self, key: &'static str, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key, value)),
        }
    }
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let mut json = String::with_capacity(value.len() + 2);
        push_json_str(&mut json, value);
        self.set(field.name(), json);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut json = String::new();
        push_json_f64(&mut json, value);
        self.set(field.name(), json);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut json = String::new();
        push_json_debug(&mut json, value);
        self.set(field.name(), json);
    }
}

/// Appends an event's fields to a line, each as `,"key":value`.
struct EventFields<'a>(&'a mut String);

impl EventFields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        push_json_str(self.0, field.name());
        self.0.push(':');
    }
}

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.0, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_json_f64(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        push_json_debug(self.0, value);
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields(Vec::with_capacity(attrs.fields().len()));
            attrs.record(&mut fields);
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
        }
        let metadata = event.metadata();
        let write = |line: &mut String| {
            line.clear();
            line.push_str("{\"timestamp\":\"");
            push_timestamp(line, SystemTime::now());
            line.push_str("\",\"level\":\"");
            line.push_str(metadata.level().as_str());
            line.push('"');
            event.record(&mut EventFields(line));
            line.push_str(",\"target\":");
            push_json_str(line, metadata.target());
            if let Some(span) = ctx.event_span(event) {
                line.push_str(",\"span\":{\"name\":");
                push_json_str(line, span.name());
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &fields.0 {
                        line.push(',');
                        push_json_str(line, key);
                        line.push(':');
                        line.push_str(value);
                    }
                }
                line.push('}');
            }
            line.push_str("}\n");
            self.sink.push(line.as_bytes(), *metadata.level());
        };
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            // Re-entered on this thread while formatting (tracing does not
            // dispatch nested events today; never panic if it ever does).
            Err(_) => write(&mut String::new()),
        });
    }
}

/// Whether `text` goes into a JSON string as it is: no control character,
/// quote or backslash, and with `ascii`, no byte above 0x7f either (so it
/// is UTF-8 without decoding it). Nearly all text the hot path writes (ids,
/// names, methods, permissions) is, and is copied at once. The check takes
/// eight bytes at a time: for the short strings it sees (10 to 40 bytes), a
/// byte-by-byte loop cost about 8 instructions per byte, even vectorised.
pub(crate) fn json_plain(text: &[u8], ascii: bool) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero when some byte of `word` is below `n` (n <= 0x80): a byte
    // borrows into its high bit only when it is itself below `n`.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let zero_byte = |word: u64| below(word, 1);
    let high = if ascii { HIGH } else { 0 };
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(bytes);
        let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
        if below(word, 0x20) | quote | backslash | (word & high) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\' && (!ascii || byte < 0x80))
}

/// Appends `value` as a JSON string (quoted, escaped).
fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    if json_plain(value.as_bytes(), false) {
        out.push_str(value);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// Appends a number as JSON (`null` for NaN and infinities, which JSON lacks).
fn push_json_f64(out: &mut String, value: f64) {
    if !value.is_finite() {
        out.push_str("null");
        return;
    }
    // A value with at most three decimals below 10^9 (every call's
    // `latency_ms`: whole microseconds in milliseconds) is written as its
    // integer and fraction. Below 10^9 such values are at least a thousand
    // ulps apart, so these digits are the shortest that read back as
    // `value`: what `{value}` prints, for 275 instructions instead of 690
    // (benches/instructions.sh; it is in every call's log line).
    let thousandths = (value * 1000.0).round();
    if value.is_sign_positive() && thousandths < 1e12 && thousandths / 1000.0 == value {
        // Digits right to left: the fraction without its trailing zeros, then the whole part.
        let thousandths = thousandths as u64;
        let mut digits = [0u8; 24];
        let mut at = digits.len();
        let mut fraction = thousandths % 1000;
        if fraction != 0 {
            let mut places = 3;
            while fraction.is_multiple_of(10) {
                fraction /= 10;
                places -= 1;
            }
            for _ in 0..places {
                at -= 1;
                digits[at] = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            at -= 1;
            digits[at] = b'.';
        }
        let mut whole = thousandths / 1000;
        loop {
            at -= 1;
            digits[at] = b'0' + (whole % 10) as u8;
            whole /= 10;
            if whole == 0 {
                break;
            }
        }
        out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
        return;
    }
    let _ = write!(out, "{value}");
}

/// Appends a `Debug` (or, through `%`, `Display`) value as a JSON string.
fn push_json_debug(out: &mut String, value: &dyn std::fmt::Debug) {
    thread_local! {
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let _ = write!(scratch, "{value:?}");
            push_json_str(out, &scratch);
        }
        // A Debug impl that logs while being formatted: rare, allocate.
        Err(_) => push_json_str(out, &format!("{value:?}")),
    });
}

/// Appends `time` as RFC 3339 UTC with microseconds (`2026-12-01T07:12:33.123456Z`).
/// The date and time of day are formatted once per second per thread.
fn push_timestamp(out: &mut String, time: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *cached = seconds;
            text.clear();
            let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
            let of_day = seconds % 86_400;
            let _ = write!(
                text,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            );
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", since.subsec_micros());
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Where lines wait for the writer thread (see the module docs).
pub struct Sink {
    buffered: Mutex<Vec<u8>>,
    /// Signalled when a line lands in an empty buffer.
    arrived: Condvar,
    /// Held while writing, so batches and [`flush`] keep their order.
    writing: Mutex<Box<dyn std::io::Write + Send>>,
    dropped: AtomicU64,
}

impl Sink {
    /// A sink writing to `out` when someone calls [`Sink::write_out`].
    fn new(out: Box<dyn std::io::Write + Send>) -> Sink {
        Sink {
            buffered: Mutex::new(Vec::with_capacity(BATCH_CAPACITY)),
            arrived: Condvar::new(),
            writing: Mutex::new(out),
            dropped: AtomicU64::new(0),
        }
    }

    /// A sink writing to `out` from a thread of its own.
    fn start(out: Box<dyn std::io::Write + Send>) -> Arc<Sink> {
        let sink = Arc::new(Sink::new(out));
        let writer = sink.clone();
        let started = std::thread::Builder::new().name("log-writer".into()).spawn(move || writer.run());
        if let Err(error) = started {
            // Lines are still written, by flush at exit; say why they are late.
            eprintln!("warning: cannot start the log writer thread: {error}");
        }
        sink
    }

    fn push(&self, line: &[u8], level: Level) {
        let mut buffered = self.buffered.lock().unwrap_or_else(|e| e.into_inner());
        let limit = if level > Level::WARN { MAX_BUFFERED } else { MAX_BUFFERED_ERRORS };
        if buffered.len() + line.len() > limit {
            drop(buffered);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = buffered.is_empty();
        buffered.extend_from_slice(line);
        drop(buffered);
        if first {
            self.arrived.notify_one();
        }
    }

    /// The writer thread: waits for a first line, lets the batch gather,
    /// writes it.
    fn run(&self) {
        let mut batch = Vec::with_capacity(BATCH_CAPACITY);
        loop {
            {
                let buffered = self.buffered.lock().unwrap_or_else(|e| e.into_inner());
                let _nonempty = self.arrived.wait_while(buffered, |b| b.is_empty()).unwrap_or_else(|e| e.into_inner());
            }
            std::thread::sleep(BATCH_WINDOW);
            self.write_out(&mut batch);
        }
    }

    /// Writes everything buffered, in order, then reports dropped lines.
    fn write_out(&self, batch: &mut Vec<u8>) {
        let mut out = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *self.buffered.lock().unwrap_or_else(|e| e.into_inner()), batch);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let mut line = String::from("{\"timestamp\":\"");
            push_timestamp(&mut line, SystemTime::now());
            let _ = writeln!(
                line,
                "\",\"level\":\"WARN\",\"message\":\"log lines dropped: stderr did not keep up\",\"dropped\":{dropped},\"target\":\"tenantry::telemetry\"}}"
            );
            batch.extend_from_slice(line.as_bytes());
        }
        // Nowhere to report a failed write to: the log is what failed.
        let _ = out.write_all(batch).and_then(|()| out.flush());
        batch.clear();
        // A burst grows the two buffers towards the bound; give that back
        // once it has been written instead of keeping it resident.
        batch.shrink_to(BATCH_CAPACITY);
    }
}

/// Writes every buffered line now (before the process exits).
pub fn flush() {
    if let Some(sink) = STDERR.get() {
        sink.write_out(&mut Vec::new());
    }
}

/// The process's stderr sink, started by the first [`JsonLog::stderr`].
static STDERR: OnceLock<Arc<Sink>> = OnceLock::new();

#[cfg(test)]
mod tests {
    use tracing_subscriber::prelude::*;

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(captured: &Captured, sink: &Sink) -> Vec<serde_json::Value> {
        sink.write_out(&mut Vec::new());
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    #[test]
    fn lines_are_json_with_the_current_span_and_its_later_fields() {
        let captured = Captured::default();
        let sink = Sink::start(Box::new(captured.clone()));
        let subscriber = tracing_subscriber::registry().with(JsonLog { sink: sink.clone() });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", request_id = "req-1", tenant = tracing::field::Empty, n = 3_u64);
            let _entered = span.enter();
            span.record("tenant", "ten_a\"b\\c\n\u{1}");
            span.record("tenant", "ten_final");
            tracing::info!(code = "OK", latency_ms = 1.25, ok = true, delta = -4_i64, "call finished");
            tracing::warn!(error = %"disk \"full\"", "something");
        });
        tracing::subscriber::with_default(tracing_subscriber::registry().with(JsonLog { sink: sink.clone() }), || {
            tracing::error!(value = f64::NAN, "outside any span");
        });
        let lines = lines(&captured, &sink);
        assert_eq!(lines.len(), 3, "{lines:?}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "call finished");
        assert_eq!(first["code"], "OK");
        assert_eq!(first["latency_ms"], 1.25);
        assert_eq!(first["ok"], true);
        assert_eq!(first["delta"], -4);
        assert_eq!(first["target"], module_path!());
        assert_eq!(first["span"]["name"], "rpc");
        assert_eq!(first["span"]["request_id"], "req-1");
        assert_eq!(first["span"]["tenant"], "ten_final");
        assert_eq!(first["span"]["n"], 3);
        let timestamp = first["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
        assert_eq!(timestamp.len(), "2026-12-01T07:12:33.123456Z".len(), "{timestamp}");
        assert_eq!(lines[1]["error"], "disk \"full\"");
        assert_eq!(lines[1]["level"], "WARN");
        assert!(lines[2].get("span").is_none(), "{}", lines[2]);
        assert_eq!(lines[2]["value"], serde_json::Value::Null);
    }

    #[test]
    fn a_written_burst_does_not_stay_resident_in_the_buffers() {
        let captured = Captured::default();
        // No writer thread: this test takes the batch itself.
        let sink = Sink::new(Box::new(captured.clone()));
        let line = [b'x'; 1023].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        // 2 MiB at once, as a flood of refusals logs it.
        for _ in 0..2048 {
            sink.push(&line, Level::INFO);
        }
        let mut batch = Vec::with_capacity(BATCH_CAPACITY);
        sink.write_out(&mut batch);
        assert_eq!(captured.0.lock().unwrap().len(), 2048 * line.len(), "all of it is written");
        // The burst's buffer came out as the batch: written, it is given back.
        assert!(batch.is_empty() && batch.capacity() <= BATCH_CAPACITY, "{}", batch.capacity());
        assert!(sink.buffered.lock().unwrap().capacity() <= BATCH_CAPACITY);
    }

    /// A `Debug` value that logs while it is formatted.
    struct Chatty;

    impl std::fmt::Debug for Chatty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            tracing::warn!("logged from inside Debug");
            f.write_str("chatty")
        }
    }

    #[test]
    fn a_value_that_logs_while_formatted_leaves_the_line_whole() {
        let captured = Captured::default();
        let sink = Sink::start(Box::new(captured.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(JsonLog { sink: sink.clone() }), || {
            tracing::info!(value = ?Chatty, "outer");
        });
        let lines = lines(&captured, &sink);
        // tracing itself drops the nested event (no re-entrant dispatch); the
        // outer line is whole and nothing panicked.
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "outer");
        assert_eq!(lines[0]["value"], "chatty");
    }

    #[test]
    fn escaping_round_trips_every_control_character_and_quote() {
        let text: String = (0u8..0x20).map(char::from).chain("\"\\é✓".chars()).collect();
        let mut json = String::new();
        push_json_str(&mut json, &text);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text);
        // Text with nothing to escape is copied as it is.
        let mut plain = String::new();
        push_json_str(&mut plain, "/tenantry.v1.AuthService/WhoAmI é\u{7f}");
        assert_eq!(plain, "\"/tenantry.v1.AuthService/WhoAmI é\u{7f}\"");
    }

    #[test]
    fn plain_text_is_told_from_text_to_escape_at_every_position() {
        for length in 0..40 {
            let base = vec![b'a'; length];
            assert!(json_plain(&base, true) && json_plain(&base, false));
            for at in 0..length {
                for (byte, plain, ascii) in [
                    (b'"', false, false),
                    (b'\\', false, false),
                    (0x00, false, false),
                    (0x1f, false, false),
                    (b' ', true, true),
                    (0x7f, true, true),
                    (0x80, true, false),
                    (0xff, true, false),
                ] {
                    let mut text = base.clone();
                    text[at] = byte;
                    assert_eq!(json_plain(&text, false), plain, "{byte:#x} at {at} of {length}");
                    assert_eq!(json_plain(&text, true), ascii, "{byte:#x} at {at} of {length} (ASCII)");
                }
            }
        }
        // Mixed text, bytes next to each other near every boundary, against
        // the byte-by-byte rule.
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        const BYTES: [u8; 12] = [0x00, 0x01, 0x1f, 0x20, 0x21, b'"', 0x23, 0x5b, b'\\', 0x5d, 0x7f, 0x80];
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..rng.random_range(0..24)).map(|_| BYTES[rng.random_range(0..BYTES.len())]).collect();
            let escapes = text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(json_plain(&text, false), !escapes, "{text:?}");
            assert_eq!(json_plain(&text, true), !escapes && text.is_ascii(), "{text:?}");
        }
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        use rand::Rng as _;
        let mut rng = rand::rng();
        let mut values = vec![0.0, -0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 1.005, 1.23, 999.999, 1e9 - 0.001, 1e9, 1e9 + 0.5];
        values.extend([-1.5, 1e-7, 2.5e15, 1.0 / 3.0, f64::MIN_POSITIVE, f64::MAX, f64::EPSILON]);
        // Latencies as the observe layer makes them, and arbitrary numbers.
        values.extend((0..50_000).map(|_| rng.random_range(0..10_000_000_000_000_u64) as f64 / 1000.0));
        values.extend((0..50_000).map(|_| rng.random_range(0..100_000_000_u64) as f64 / 1000.0));
        values.extend((0..50_000).map(|_| f64::from_bits(rng.random())).filter(|v| v.is_finite()));
        for value in values {
            let mut ours = String::new();
            push_json_f64(&mut ours, value);
            assert_eq!(ours, format!("{value}"), "{value:e}");
        }
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut ours = String::new();
            push_json_f64(&mut ours, value);
            assert_eq!(ours, "null");
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        for seconds in [0_u64, 951_782_400, 1_796_083_199, 4_102_444_800] {
            let time = UNIX_EPOCH + Duration::new(seconds, 123_456_789);
            let mut ours = String::new();
            push_timestamp(&mut ours, time);
            let theirs =
                chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_full_buffer_drops_info_lines_keeps_errors_to_their_own_bound_and_says_how_many() {
        let captured = Captured::default();
        // No writer thread: the test decides when the buffer is written.
        let sink = Sink {
            buffered: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            writing: Mutex::new(Box::new(captured.clone())),
            dropped: AtomicU64::new(0),
        };
        let big = vec![b' '; MAX_BUFFERED - 10];
        sink.push(&big, Level::INFO);
        sink.push(b"{\"level\":\"INFO\"}\n", Level::INFO);
        sink.push(b"{\"level\":\"ERROR\"}\n", Level::ERROR);
        let kept = sink.buffered.lock().unwrap().len();
        // Past the errors' own bound even they are dropped: memory stays bounded.
        let mut held = kept;
        while held < MAX_BUFFERED_ERRORS {
            sink.push(&big[..1024 * 1024], Level::ERROR);
            held = sink.buffered.lock().unwrap().len();
            assert!(held <= MAX_BUFFERED_ERRORS);
            if sink.dropped.load(Ordering::Relaxed) > 1 {
                break;
            }
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 2, "one INFO line, then one ERROR past the bound");
        // Only what matters to the rest of the test is written out.
        sink.buffered.lock().unwrap().truncate(kept);
        sink.write_out(&mut Vec::new());
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let tail: Vec<&str> = text.trim().lines().collect();
        assert_eq!(tail[tail.len() - 2].trim(), "{\"level\":\"ERROR\"}");
        let report: serde_json::Value = serde_json::from_str(tail[tail.len() - 1]).unwrap();
        assert_eq!(report["dropped"], 2);
        assert_eq!(report["level"], "WARN");
    }
}
