//! `/containerLogs/{ns}/{pod}/{container}`: each container has written ten lines by the time
//! anyone asks, line N reading `line N of NS/POD/CONTAINER`, written N-1 seconds after a fixed
//! base time; a followed container writes one more every 200 ms. `tailLines` (or the older
//! `tail`), `limitBytes`, `timestamps`, `follow` and `previous` behave as the Go fake kubelet's
//! (`tests/control-plane/cmd/fake-kubelet/logs.go`); `sinceSeconds`, `sinceTime` and `stream`
//! are accepted and ignored.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Lines written before anyone asks.
const INITIAL_LINES: u64 = 10;
/// How often a followed container writes a line.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// The time of line 1 (2025-01-01T00:00:00.123456789Z): seconds and nanoseconds.
const BASE_SECONDS: i64 = 1_735_689_600;
const BASE_NANOS: i32 = 123_456_789;

/// What a log request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LogOptions {
    pub(crate) tail_lines: Option<u64>,
    pub(crate) limit_bytes: Option<u64>,
    pub(crate) timestamps: bool,
    pub(crate) follow: bool,
    pub(crate) previous: bool,
}

impl LogOptions {
    /// Reads the query's pairs; the error is the 400 response's text.
    pub(crate) fn parse(query: &[(String, String)]) -> Result<Self, String> {
        let first = |name: &str| query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        // The kubelet's older spelling, tail=N, wins over tailLines; tail=all is everything.
        let tail = match first("tail").filter(|t| !t.is_empty()) {
            Some("all") => None,
            Some(tail) => Some(tail),
            None => first("tailLines").filter(|t| !t.is_empty()),
        };
        let tail_lines = whole_number("tailLines", tail, 0);
        let limit_bytes = whole_number("limitBytes", first("limitBytes").filter(|t| !t.is_empty()), 1);
        let (tail_lines, limit_bytes) = match (tail_lines, limit_bytes) {
            (Ok(tail), Ok(limit)) => (tail, limit),
            (tail, limit) => {
                let errors: Vec<String> = [tail.err(), limit.err()].into_iter().flatten().collect();
                return Err(errors.join("\n"));
            }
        };
        // Kubernetes' query booleans: absent, "0" and "false" are false, anything else true.
        let flag = |name: &str| first(name).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
        Ok(LogOptions {
            tail_lines,
            limit_bytes,
            timestamps: flag("timestamps"),
            follow: flag("follow"),
            previous: flag("previous"),
        })
    }
}

fn whole_number(name: &str, text: Option<&str>, min: u64) -> Result<Option<u64>, String> {
    let Some(text) = text else { return Ok(None) };
    let value: i64 = text
        .parse()
        .map_err(|_| format!("{name}: {text:?} is not a whole number"))?;
    if value < min as i64 {
        return Err(format!("{name} must be at least {min}"));
    }
    Ok(Some(value as u64))
}

/// The 400 text of a `previous` request, which no container has.
pub(crate) fn no_previous(pod: &str, container: &str) -> String {
    format!("previous terminated container {container:?} in pod {pod:?} not found")
}

/// Line `n` (from 1) of a container, newline included.
pub(crate) fn line(n: u64, timestamps: bool, namespace: &str, pod: &str, container: &str) -> String {
    let text = format!("line {n} of {namespace}/{pod}/{container}\n");
    if !timestamps {
        return text;
    }
    // RFC 3339 with nanoseconds, as Go's RFC3339Nano writes these (no trailing zero to drop).
    let at = jiff::Timestamp::from_second(BASE_SECONDS + n as i64 - 1).expect("a time in range");
    format!("{}.{BASE_NANOS:09}Z {text}", at.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// The body of a log response: the initial lines at once, then (following) a line every 200 ms
/// until the client goes away or `limitBytes` is reached.
pub(crate) fn body(
    options: LogOptions,
    namespace: String,
    pod: String,
    container: String,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let first = match options.tail_lines {
        Some(tail) if tail < INITIAL_LINES => INITIAL_LINES - tail + 1,
        _ => 1,
    };
    let mut limit = Limit(options.limit_bytes);
    let mut initial = String::new();
    for n in first..=INITIAL_LINES {
        initial.push_str(&line(n, options.timestamps, &namespace, &pod, &container));
    }
    let initial = limit.cut(initial.into_bytes());
    struct State {
        next: u64,
        limit: Limit,
        ticks: Option<tokio::time::Interval>,
        options: LogOptions,
        names: (String, String, String),
    }
    let state = State {
        next: INITIAL_LINES + 1,
        ticks: (options.follow && !limit.reached()).then(|| {
            let start = tokio::time::Instant::now() + FOLLOW_INTERVAL;
            tokio::time::interval_at(start, FOLLOW_INTERVAL)
        }),
        limit,
        options,
        names: (namespace, pod, container),
    };
    let followed = futures::stream::unfold(state, |mut state| async move {
        let ticks = state.ticks.as_mut()?;
        if state.limit.reached() {
            return None;
        }
        ticks.tick().await;
        let (namespace, pod, container) = &state.names;
        let text = line(state.next, state.options.timestamps, namespace, pod, container);
        state.next += 1;
        let chunk = state.limit.cut(text.into_bytes());
        Some((Ok(chunk), state))
    });
    futures::stream::once(async move { Ok(initial) }).chain(followed)
}

/// `limitBytes`: what is left to send, if limited.
struct Limit(Option<u64>);

impl Limit {
    fn cut(&mut self, mut bytes: Vec<u8>) -> Bytes {
        if let Some(left) = self.0.as_mut() {
            bytes.truncate((*left).min(bytes.len() as u64) as usize);
            *left -= bytes.len() as u64;
        }
        Bytes::from(bytes)
    }

    fn reached(&self) -> bool {
        self.0 == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    async fn collect(options: LogOptions) -> String {
        let chunks: Vec<_> = body(options, "ns".into(), "p".into(), "c".into()).collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn options_follow_the_kubelets_query() {
        let options = LogOptions::parse(&query(&[
            ("tailLines", "3"),
            ("timestamps", "true"),
            ("follow", ""),
        ]))
        .unwrap();
        assert_eq!(
            options,
            LogOptions {
                tail_lines: Some(3),
                timestamps: true,
                follow: true,
                ..LogOptions::default()
            }
        );
        let options = LogOptions::parse(&query(&[
            ("tailLines", "3"),
            ("tail", "all"),
            ("previous", "false"),
        ]))
        .unwrap();
        assert_eq!(options, LogOptions::default());
        assert_eq!(
            LogOptions::parse(&query(&[("tail", "2"), ("limitBytes", "5")])).unwrap(),
            LogOptions {
                tail_lines: Some(2),
                limit_bytes: Some(5),
                ..LogOptions::default()
            }
        );
        assert_eq!(
            LogOptions::parse(&query(&[("tailLines", "x"), ("limitBytes", "0")])),
            Err("tailLines: \"x\" is not a whole number\nlimitBytes must be at least 1".to_string())
        );
        assert_eq!(
            LogOptions::parse(&query(&[("tailLines", "-1")])),
            Err("tailLines must be at least 0".to_string())
        );
        assert_eq!(
            no_previous("p", "c"),
            r#"previous terminated container "c" in pod "p" not found"#
        );
    }

    #[test]
    fn lines_and_timestamps_match_the_go_fake_kubelet() {
        assert_eq!(line(1, false, "ns", "p", "c"), "line 1 of ns/p/c\n");
        assert_eq!(
            line(1, true, "ns", "p", "c"),
            "2025-01-01T00:00:00.123456789Z line 1 of ns/p/c\n"
        );
        assert_eq!(
            line(62, true, "a", "b", "c"),
            "2025-01-01T00:01:01.123456789Z line 62 of a/b/c\n"
        );
    }

    #[tokio::test]
    async fn bodies_honour_tail_and_limit() {
        let all = collect(LogOptions::default()).await;
        assert_eq!(all.lines().count(), 10);
        assert!(all.starts_with("line 1 of ns/p/c\n"));
        let tail = collect(LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        })
        .await;
        assert_eq!(tail, "line 9 of ns/p/c\nline 10 of ns/p/c\n");
        assert_eq!(
            collect(LogOptions {
                tail_lines: Some(0),
                ..LogOptions::default()
            })
            .await,
            ""
        );
        assert_eq!(
            collect(LogOptions {
                tail_lines: Some(50),
                ..LogOptions::default()
            })
            .await,
            all
        );
        assert_eq!(
            collect(LogOptions {
                limit_bytes: Some(20),
                ..LogOptions::default()
            })
            .await,
            "line 1 of ns/p/c\nlin"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn followed_logs_grow_every_200ms_until_the_limit() {
        let options = LogOptions {
            tail_lines: Some(1),
            follow: true,
            limit_bytes: Some(60),
            ..LogOptions::default()
        };
        let started = tokio::time::Instant::now();
        let text = collect(options).await;
        assert_eq!(
            text,
            "line 10 of ns/p/c\nline 11 of ns/p/c\nline 12 of ns/p/c\nline 13 of ns/p/c\n"[..60].to_string()
        );
        assert_eq!(started.elapsed(), Duration::from_millis(600));
        let mut followed = Box::pin(body(
            LogOptions {
                follow: true,
                tail_lines: Some(0),
                ..LogOptions::default()
            },
            "ns".into(),
            "p".into(),
            "c".into(),
        ));
        assert_eq!(followed.next().await.unwrap().unwrap(), "");
        assert_eq!(followed.next().await.unwrap().unwrap(), "line 11 of ns/p/c\n");
        assert_eq!(followed.next().await.unwrap().unwrap(), "line 12 of ns/p/c\n");
    }
}
