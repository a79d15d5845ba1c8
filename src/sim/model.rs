//! The simulator's engine model: decides *when* each token of a request is
//! emitted. Protocol front-ends (OpenAI, ...) only format what it emits.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::timer::PreciseTimer;

/// A generation request as the engine model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// When the request arrived at the server.
    pub arrival: Instant,
}

/// One step of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenEvent {
    /// The next token is ready now.
    Token,
    /// The engine failed the request mid-stream.
    Fail(String),
    /// Injected fault: drop the connection now, without the stream's
    /// terminator (see [`super::faults::fault_item`]).
    Disconnect,
    /// Injected fault: send a corrupt chunk, then end the stream.
    Malformed,
}

/// Why the model refused a request outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status to answer with.
    pub status: u16,
    /// Error message.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u64>,
}

/// The token stream of one admitted request.
pub enum Generation {
    /// Fixed delays: token k at arrival + ttft + k·itl.
    Fixed(FixedGeneration),
    /// Events pushed by a scheduler loop (batching models).
    Channel(mpsc::Receiver<GenEvent>),
    /// Another generation with injected faults.
    Faulty(Box<super::faults::FaultyGeneration>),
}

impl Generation {
    /// Waits for the next event; `None` when the generation is complete.
    pub async fn next(&mut self) -> Option<GenEvent> {
        match self {
            Generation::Fixed(f) => f.next().await,
            Generation::Channel(rx) => rx.recv().await,
            Generation::Faulty(f) => f.next().await,
        }
    }
}

/// Decides when tokens are emitted.
pub trait EngineModel: Send + Sync {
    /// Admits a request or rejects it.
    fn admit(&self, a: Admission) -> Result<Generation, Rejection>;

    /// Admits a request whose prompt tokens are known (ids in order), so a
    /// model with a prefix cache can find reusable blocks. Front-ends should
    /// prefer this; the default ignores the tokens.
    fn admit_prompt(&self, a: Admission, prompt: &[u64]) -> Result<Generation, Rejection> {
        let _ = prompt;
        self.admit(a)
    }

    /// Requests waiting for a batch slot, for models that queue (`None`:
    /// the model has no queue).
    fn queue_depth(&self) -> Option<usize> {
        None
    }
}

/// The fixed-delay model: exact, drift-free deadlines for truth tests.
pub struct FixedDelay {
    /// Time to first token.
    pub ttft: Duration,
    /// Inter-token latency.
    pub itl: Duration,
    /// Sub-millisecond timer.
    pub timer: PreciseTimer,
}

/// State of one fixed-delay generation.
pub struct FixedGeneration {
    timer: PreciseTimer,
    first: Instant,
    itl: Duration,
    next: u32,
    total: u32,
}

impl FixedGeneration {
    async fn next(&mut self) -> Option<GenEvent> {
        if self.next >= self.total {
            return None;
        }
        let due = self.first + self.itl * self.next;
        self.timer.sleep_until(due).await;
        self.next += 1;
        Some(GenEvent::Token)
    }
}

impl EngineModel for FixedDelay {
    fn admit(&self, a: Admission) -> Result<Generation, Rejection> {
        Ok(Generation::Fixed(FixedGeneration {
            timer: self.timer.clone(),
            first: a.arrival + self.ttft,
            itl: self.itl,
            next: 0,
            total: a.max_tokens,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_delay_emits_exact_count_on_deadlines() {
        let m = FixedDelay {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(2),
            timer: PreciseTimer::start().unwrap(),
        };
        let arrival = Instant::now();
        let mut g = m
            .admit(Admission {
                prompt_tokens: 1,
                max_tokens: 4,
                arrival,
            })
            .unwrap();
        let mut n = 0;
        while let Some(ev) = g.next().await {
            assert_eq!(ev, GenEvent::Token);
            assert!(arrival.elapsed() >= Duration::from_millis(5 + 2 * n));
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
