//! The export side's own async runtime: one worker thread running the span exporter, the
//! metrics push and the Prometheus endpoint, apart from the pipeline (which never waits on the
//! network) and from whatever runtime the caller has.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};

use super::ExportError;

/// Shared by every exporting sink; the runtime stops when the last one is dropped.
#[derive(Clone)]
pub struct ExportRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Option<Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and panics when the last sink is dropped inside
        // another runtime's async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ExportRuntime {
    pub fn new() -> Result<Self, ExportError> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("ollama-tracer-export")
            .enable_all()
            .build()?;
        Ok(ExportRuntime { inner: Arc::new(Inner { runtime: Some(runtime) }) })
    }

    pub fn handle(&self) -> Handle {
        match &self.inner.runtime {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }

    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(fut)
    }

    /// Runs `f` inside the runtime's context (tonic channels and timers need one to be built).
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let handle = self.handle();
        let _guard = handle.enter();
        f()
    }
}
