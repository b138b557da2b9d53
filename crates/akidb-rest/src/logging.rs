//! The service's log: `tracing` to stderr, as text or JSON lines, filtered by `RUST_LOG`.
//!
//! Log lines carry what clients sent (request ids, for one). JSON lines escape it as any JSON
//! string; text lines escape it too ([`EscapedFields`]): a value that could be read as
//! something else (`abc}:status=200:FORGED` as a request id) is written as a quoted, escaped
//! string, so no client can forge a field or a line.

use std::fmt;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

use crate::config::LogFormat;

/// Installs the global log subscriber: `format` on stderr, filtered by `RUST_LOG` (default
/// `info`). Fails if one is installed already.
pub fn init_logging(format: LogFormat) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|error| error.to_string())
}

/// The service's log subscriber: `format` lines to `writer`, filtered by `filter`, text with
/// [`EscapedFields`] (and colours when `ansi`), JSON with the current span's fields.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).fmt_fields(EscapedFields).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// The fields of text log lines, as `name=value`, with every value that holds anything but
/// visible ASCII other than `"`, `\`, `=`, `{`, `}`, `[`, `]` written as a quoted Rust string
/// (`id="abc}:status=200:FORGED"`), control characters escaped. The event's message is
/// written as it is, its control characters escaped (no line can be forged).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        // `log.*` fields are the `log` crate's metadata, shown elsewhere in the line.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        self.result = self.result.and_then(|()| {
            if field.name() == "message" {
                value.chars().try_for_each(|character| {
                    if character.is_control() {
                        write!(self.writer, "{}", character.escape_default())
                    } else {
                        self.writer.write_char(character)
                    }
                })
            } else if is_plain(value) {
                write!(self.writer, "{}={value}", field.name())
            } else {
                write!(self.writer, "{}={value:?}", field.name())
            }
        });
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too, their `Debug` being their `Display`.
        self.write(field, &format!("{value:?}"));
    }
}

/// Whether `value` reads as one token in a text log line, written without quotes.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|character| {
            character.is_ascii_graphic()
                && !matches!(character, '"' | '\\' | '=' | '{' | '}' | '[' | ']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_tokens_stay_unquoted() {
        assert!(is_plain("req-42.abc"));
        assert!(is_plain("127.0.0.1:8080"));
        assert!(!is_plain("abc}:status=200:FORGED"));
        assert!(!is_plain("two words"));
        assert!(!is_plain(""));
        assert!(!is_plain("zwölf"));
    }
}
