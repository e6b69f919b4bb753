//! Client-side rate limiting (`qps` / `burst` in the config): a token bucket in front of the
//! kube client, for an operator who wants a fixed ceiling. Off by default (`qps: 0`): as
//! controller-runtime does since v0.21 on SIG API Machinery's advice, vcsync leaves protecting
//! the API server to its Priority and Fairness and holds back when the server says so (429 with
//! Retry-After, src/pushback.rs); a client-side bucket only slows a burst the server could take.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// Wraps a service in a [`TokenBucket`].
#[derive(Clone, Copy, Debug)]
pub struct TokenBucketLayer {
    qps: f64,
    burst: f64,
}

impl TokenBucketLayer {
    /// The bucket of a cluster's `qps` / `burst`: none for `qps: 0` (the default).
    pub fn for_config(qps: u32, burst: u32) -> Option<Self> {
        (qps > 0).then(|| Self::new(qps, burst))
    }

    /// `qps` tokens per second, at most `burst` saved up (at least one of each).
    pub fn new(qps: u32, burst: u32) -> Self {
        Self {
            qps: f64::from(qps.max(1)),
            burst: f64::from(burst.max(1)),
        }
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucket<S>;

    fn layer(&self, inner: S) -> TokenBucket<S> {
        TokenBucket {
            inner,
            qps: self.qps,
            burst: self.burst,
            tokens: self.burst,
            last: Instant::now(),
            sleep: None,
            reserved: false,
        }
    }
}

/// A service that is ready only when a token is available.
///
/// kube's client drives its service from one buffer worker, so the bucket needs no locking.
pub struct TokenBucket<S> {
    inner: S,
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    reserved: bool,
}

impl<S> TokenBucket<S> {
    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.qps).min(self.burst);
        self.last = now;
    }
}

impl<S: Service<R>, R> Service<R> for TokenBucket<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.reserved {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            self.refill();
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                self.reserved = true;
            } else {
                let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.qps);
                self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.reserved = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    async fn time_for(requests: usize, qps: u32, burst: u32) -> Duration {
        let mut service =
            TokenBucketLayer::new(qps, burst).layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
        let start = Instant::now();
        for _ in 0..requests {
            service.ready().await.unwrap().call(()).await.unwrap();
        }
        start.elapsed()
    }

    #[test]
    fn qps_zero_is_no_bucket_and_the_default() {
        assert!(TokenBucketLayer::for_config(0, 200).is_none());
        let default = vcsync_syncer::config::ClusterConfig::default();
        assert_eq!(default.qps, 0);
        assert!(TokenBucketLayer::for_config(default.qps, default.burst).is_none());
        let explicit = TokenBucketLayer::for_config(100, 200).unwrap();
        assert_eq!((explicit.qps, explicit.burst), (100.0, 200.0));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_without_waiting() {
        assert_eq!(time_for(20, 10, 20).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_burst_requests_are_paced_at_qps() {
        // 20 from the bucket, then 10 more at 10/s.
        let elapsed = time_for(30, 10, 20).await;
        assert!(
            elapsed >= Duration::from_millis(990) && elapsed <= Duration::from_millis(1010),
            "{elapsed:?}"
        );
    }
}
