//! What a live capture counts about itself, whichever the back-end: plain records, read by the
//! run's report, the metrics and `top`.

/// The kernel programs' counters, summed over CPUs (see `tracer_common::counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub packets_inspected: u64,
    pub packets_matched: u64,
    pub bytes_matched: u64,
    pub records_submitted: u64,
    pub bytes_submitted: u64,
    pub ringbuf_lost_records: u64,
    pub ringbuf_lost_bytes: u64,
    pub truncated_bytes: u64,
    pub load_failures: u64,
    pub load_failed_bytes: u64,
    pub parse_failures: u64,
    pub pure_acks_skipped: u64,
    pub loopback_ingress_skipped: u64,
    pub nesting_overflow: u64,
    /// Largest skb seen on a server port (a maximum, not a sum).
    pub max_skb_len: u64,
    /// Socket records (attribution) written, and lost to a full ring buffer.
    pub sock_records: u64,
    pub sock_records_lost: u64,
    /// Packets (and their payload bytes) reported without their bytes because user space
    /// asked for their body to be skipped.
    pub skipped_packets: u64,
    pub skipped_bytes: u64,
    /// Blob uploads whose body the programs named for skipping from the upload's head, before
    /// user space could.
    pub blob_skips_named: u64,
    /// The TLS capture's, when it runs.
    pub tls: Option<TlsCounters>,
}

impl KernelCounters {
    /// Payload bytes the kernel saw but did not deliver (ring full, truncation, load failure).
    pub fn lost_bytes(&self) -> u64 {
        self.ringbuf_lost_bytes + self.truncated_bytes + self.load_failed_bytes
    }

    /// Named values, for metrics and logs.
    pub fn named(&self) -> [(&'static str, u64); 20] {
        [
            ("packets_inspected", self.packets_inspected),
            ("packets_matched", self.packets_matched),
            ("bytes_matched", self.bytes_matched),
            ("records_submitted", self.records_submitted),
            ("bytes_submitted", self.bytes_submitted),
            ("ringbuf_lost_records", self.ringbuf_lost_records),
            ("ringbuf_lost_bytes", self.ringbuf_lost_bytes),
            ("truncated_bytes", self.truncated_bytes),
            ("load_failures", self.load_failures),
            ("load_failed_bytes", self.load_failed_bytes),
            ("parse_failures", self.parse_failures),
            ("pure_acks_skipped", self.pure_acks_skipped),
            ("loopback_ingress_skipped", self.loopback_ingress_skipped),
            ("nesting_overflow", self.nesting_overflow),
            ("max_skb_len", self.max_skb_len),
            ("sock_records", self.sock_records),
            ("sock_records_lost", self.sock_records_lost),
            ("skipped_packets", self.skipped_packets),
            ("skipped_bytes", self.skipped_bytes),
            ("blob_skips_named", self.blob_skips_named),
        ]
    }
}

/// Counters kept by the reader in userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCounters {
    pub records_read: u64,
    pub payload_bytes_read: u64,
    /// Records that failed to decode (`ebpf::records::decode_record`).
    pub malformed_records: u64,
    /// Records on ports no longer configured.
    pub unoriented_records: u64,
    /// Socket records (connect/listen events for attribution).
    pub socket_records: u64,
}

/// Drops and reader-side counts, summed over the open handles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapCounters {
    /// `pcap_stats` ps_recv: packets that passed the filter.
    pub received: u64,
    /// `pcap_stats` ps_drop: dropped because the buffer was full.
    pub dropped: u64,
    /// `pcap_stats` ps_ifdrop: dropped by the interface/driver.
    pub if_dropped: u64,
    /// Frames read by us.
    pub frames: u64,
    /// Frames the decoder rejected.
    pub decode_errors: u64,
    /// Frames cut short by the snap length.
    pub truncated_frames: u64,
}

/// Loss counters of a running capture, whichever the backend.
// Taken four times a second and moved once: the eBPF variant's size (its TLS counters) costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum LiveCounters {
    Ebpf(KernelCounters),
    Pcap(PcapCounters),
}

impl LiveCounters {
    /// Packets (records) the capture itself lost.
    pub fn drops(&self) -> u64 {
        match self {
            LiveCounters::Ebpf(k) => k.ringbuf_lost_records + k.tls.map_or(0, |t| t.records_lost + t.events_lost),
            LiveCounters::Pcap(p) => p.dropped + p.if_dropped,
        }
    }
}

/// The TLS capture's counters: the kernel's (`tracer_common::counter::TLS_*`), the streams'
/// (plaintext into connections) and the probes' (files attached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCounters {
    /// Reads and writes the uprobes saw, and their plaintext bytes (every session).
    pub calls: u64,
    pub bytes: u64,
    pub sessions_traced: u64,
    pub sessions_ignored: u64,
    /// Bytes of ignored or undecided sessions: never copied to user space.
    pub bytes_ignored: u64,
    pub records_submitted: u64,
    pub bytes_submitted: u64,
    /// Records (and bytes) lost to a full ring buffer.
    pub records_lost: u64,
    pub bytes_lost: u64,
    pub truncated_bytes: u64,
    pub read_failed_bytes: u64,
    /// Session sockets the kernel found, and descriptors that led to no TCP socket.
    pub flows_found: u64,
    pub not_sockets: u64,
    pub events_lost: u64,
    pub execs: u64,
    /// Calls of processes left out by include/exclude.
    pub pid_filtered: u64,
    pub streams: TlsStreamStats,
    /// Files probed, and files that could not be.
    pub targets: u64,
    pub attach_failures: u64,
    /// Exec events the probes' thread could not take in time (the rescan catches up).
    pub execs_dropped: u64,
}

/// What the TLS streams counted (every byte not made into a segment has a counter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStreamStats {
    pub records: u64,
    pub bytes: u64,
    /// Sessions whose socket became known, and connections made of them.
    pub flows: u64,
    pub connections: u64,
    /// Sessions that were the other end of a connection already followed, and their bytes.
    pub duplicate_sessions: u64,
    pub duplicate_bytes: u64,
    /// Bytes dropped because their session's socket never became known in time, or because
    /// the wait was full.
    pub unresolved_bytes: u64,
    /// Packets of connections a TLS session owns, dropped by the packet path.
    pub wire_segments_dropped: u64,
    /// Sessions forgotten to stay under the limit.
    pub evicted_sessions: u64,
    pub malformed_records: u64,
}
