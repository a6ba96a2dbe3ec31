//! A request body streamed to the first attempt while a bounded copy is kept, so that another
//! attempt can send it again (the idea of linkerd2-proxy's `ReplayBody`): nothing waits for
//! the body to be collected first, and a retry replays what was kept, then goes on with what
//! has not arrived yet.
//!
//! One handle reads from the app at a time; the others wait for it to be dropped (a failed
//! attempt's connection lets go of its body a moment after the failure). Once the body has
//! ended within the bound, every handle replays it without waiting. A body that outgrew the
//! bound can no longer be copied: [`Replay::try_clone`] says so, and the retry layer answers
//! with the failure instead.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// How much of a request body is kept for a retry.
pub const MAX_REPLAY: usize = 64 * 1024;

/// One attempt's copy of a request body.
pub struct Replay {
    shared: Arc<Shared>,
    /// The reading state, while this handle holds it.
    state: Option<State>,
    /// Chunks of the kept copy this handle has sent.
    pos: usize,
    /// Bytes this handle has sent, for its size hint.
    sent: u64,
    trailers_sent: bool,
    /// Whether this handle read past the kept copy (only it may go on reading).
    past_copy: bool,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("pos", &self.pos).field("sent", &self.sent).finish_non_exhaustive()
    }
}

struct Shared {
    slot: Mutex<Slot>,
    /// The body outgrew the bound (or failed): no new copy can be made.
    spoiled: AtomicBool,
    /// The whole body, once it ended within the bound.
    done: OnceLock<Done>,
    hint: SizeHint,
}

struct Slot {
    state: Option<State>,
    waiting: Option<Waker>,
}

/// What the handle that reads from the app holds.
struct State {
    source: Body,
    chunks: Vec<Bytes>,
    kept: usize,
    trailers: Option<HeaderMap>,
}

struct Done {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replay {
    /// A handle of `body`; it and every copy of it read from the start.
    pub fn new(body: Body) -> Replay {
        let hint = body.size_hint();
        let state = State { source: body, chunks: Vec::new(), kept: 0, trailers: None };
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot { state: Some(state), waiting: None }),
            spoiled: AtomicBool::new(false),
            done: OnceLock::new(),
            hint,
        });
        Replay { shared, state: None, pos: 0, sent: 0, trailers_sent: false, past_copy: false }
    }

    /// A new handle that sends the body from its start; `None` once it outgrew the bound.
    pub fn try_clone(&self) -> Option<Replay> {
        if self.shared.spoiled.load(Ordering::Acquire) {
            return None;
        }
        Some(Replay {
            shared: self.shared.clone(),
            state: None,
            pos: 0,
            sent: 0,
            trailers_sent: false,
            past_copy: false,
        })
    }

    /// Whether [`Replay::try_clone`] would make a copy.
    pub fn can_clone(&self) -> bool {
        !self.shared.spoiled.load(Ordering::Acquire)
    }

    /// Whether the whole body arrived and was kept: a hedged attempt can send it at once.
    pub fn is_complete(&self) -> bool {
        self.shared.done.get().is_some()
    }

    fn replay_done(&mut self, done: &Done) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = done.chunks.get(self.pos) {
            self.pos += 1;
            self.sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        match &done.trailers {
            Some(t) if !self.trailers_sent => {
                self.trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(t.clone()))))
            }
            _ => Poll::Ready(None),
        }
    }

    /// Takes the reading state from the shared slot, or asks to be woken when it is back.
    fn acquire(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state.is_some() {
            return true;
        }
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.state.take() {
            Some(s) => {
                self.state = Some(s);
                true
            }
            None => {
                slot.waiting = Some(cx.waker().clone());
                false
            }
        }
    }
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(done) = this.shared.clone().done.get() {
            return this.replay_done(done);
        }
        if !this.acquire(cx) {
            return Poll::Pending;
        }
        let Some(state) = this.state.as_mut() else { return Poll::Pending };
        if let Some(chunk) = state.chunks.get(this.pos) {
            this.pos += 1;
            this.sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if this.shared.spoiled.load(Ordering::Acquire) && !this.past_copy {
            return Poll::Ready(Some(Err("the request body was too large to send again".into())));
        }
        let frame = match Pin::new(&mut state.source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                if !this.shared.spoiled.load(Ordering::Acquire) {
                    let done =
                        Done { chunks: std::mem::take(&mut state.chunks), trailers: state.trailers.take() };
                    let _ = this.shared.done.set(done);
                    this.pos = usize::MAX;
                }
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                this.shared.spoiled.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            this.sent += data.len() as u64;
            if this.past_copy || state.kept + data.len() > MAX_REPLAY {
                this.shared.spoiled.store(true, Ordering::Release);
                this.past_copy = true;
            } else {
                state.kept += data.len();
                state.chunks.push(data.clone());
                this.pos += 1;
            }
        } else if let Some(t) = frame.trailers_ref() {
            state.trailers = Some(t.clone());
            this.trailers_sent = true;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match self.shared.done.get() {
            Some(done) => self.pos >= done.chunks.len() && (done.trailers.is_none() || self.trailers_sent),
            None => self.shared.hint.exact() == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let hint = &self.shared.hint;
        let mut out = SizeHint::new();
        out.set_lower(hint.lower().saturating_sub(self.sent));
        if let Some(upper) = hint.upper() {
            out.set_upper(upper.saturating_sub(self.sent));
        }
        out
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.state = Some(state);
            if let Some(w) = slot.waiting.take() {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::body;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p)))).collect();
        body::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn read(b: Replay) -> Result<Vec<u8>, BoxError> {
        Ok(b.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_retry_replays_what_the_first_attempt_read_and_goes_on() {
        let mut first = Replay::new(chunks(&[b"ab", b"cd", b"ef"]));
        // The first attempt reads one chunk, then fails.
        let got = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&got[..], b"ab");
        let second = first.try_clone().unwrap();
        drop(first);
        assert_eq!(read(second).await.unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn a_finished_body_is_replayed_by_any_number_of_handles() {
        let first = Replay::new(chunks(&[b"ab", b"cd"]));
        let second = first.try_clone().unwrap();
        assert_eq!(read(first).await.unwrap(), b"abcd");
        assert!(second.is_complete());
        let third = second.try_clone().unwrap();
        assert_eq!(read(second).await.unwrap(), b"abcd");
        assert_eq!(read(third).await.unwrap(), b"abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_bound_streams_but_cannot_be_copied() {
        static BIG: [u8; MAX_REPLAY] = [7; MAX_REPLAY];
        let mut first = Replay::new(chunks(&[b"x", &BIG, b"y"]));
        let early = first.try_clone().unwrap();
        let mut total = 0;
        while let Some(f) = first.frame().await {
            total += f.unwrap().into_data().unwrap().len();
        }
        assert_eq!(total, MAX_REPLAY + 2, "the first attempt gets it all");
        assert!(first.try_clone().is_none());
        drop(first);
        assert!(read(early).await.is_err(), "a copy made before it outgrew the bound cannot finish");
    }

    #[tokio::test]
    async fn a_second_handle_waits_for_the_first_to_let_go() {
        let mut first = Replay::new(chunks(&[b"ab", b"cd"]));
        let _ = first.frame().await;
        let second = first.try_clone().unwrap();
        let reader = tokio::spawn(read(second));
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        drop(first);
        assert_eq!(reader.await.unwrap().unwrap(), b"abcd");
    }
}
