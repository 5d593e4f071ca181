//! The kernel programs' aya-log debug lines (`--ebpf-debug-log`), forwarded to `tracing`.

use aya::Ebpf;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Forwards aya-log records to `tracing` (target `ebpf`).
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(target: "ebpf", "{}", record.args());
    }
    fn flush(&self) {}
}

pub(super) fn start_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init_with_logger(ebpf, TracingLog) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("eBPF debug log unavailable: {e}");
            return None;
        }
    };
    // SAFETY: the logger owns its ring-buffer fd for its whole life.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            let e = e.into_parts().1;
            tracing::warn!("eBPF debug log unavailable: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
