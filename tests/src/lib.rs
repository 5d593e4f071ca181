//! Test traffic for ollama-tracer: recorded fixtures, Go-style HTTP framing, synthetic captures.
//!
//! - [`fixtures`]: the recorded exchanges in `tests/fixtures/recorded`.
//! - [`wire`]: an exchange rendered to the exact bytes client and Go server write, per flush.
//! - [`synth`]: those bytes as timed TCP packets of one or more connections, with ground truth,
//!   and perturbations (reorder, duplicate, drop, split, snaplen, late start).
//! - [`drive`]: packets through the tracer's pipeline, in memory.
//! - [`fuzz`]: the fuzz target bodies (cargo-fuzz binaries in `tracer-core/fuzz`).
//! - [`standin`]: the Ollama stand-in server (`ollama-standin`): replays fixtures to real
//!   clients with Ollama's framing and pacing, and logs ground truth.
//! - [`pcap`]: pcap / pcapng writers for every link type the tracer reads.
//! - [`prometheus`]: a real Prometheus server scraping a target, and its query API.
//! - [`process`]: the stand-in as a child process; the Python venv of real clients.
//! - [`tap`]: a recording TCP proxy: real clients and servers, the packets a capture would see.
//! - [`server_traffic`]: traffic (through the tap, to a stand-in that loads models) with known
//!   concurrency, loads, unloads and `/api/ps` answers, for the server metrics.
//! - [`otlp`]: a real OTLP receiver (gRPC and HTTP) for the export tests.
//! - [`output`]: the `ollama-tracer` binary run by a test: its JSON spans and summary, OTLP
//!   values as JSON, the metrics recomputed from spans.
//! - [`load`]: a load generator (many concurrent keep-alive connections of Ollama calls, with
//!   client-side timestamps), also the `ollama-load` binary.
//! - [`traffic`]: bulk transfers, small-call latency and idle connections for the cost and
//!   memory benchmarks (the `bench-traffic` binary).
//! - [`kubeapi`]: a stand-in Kubernetes API server answering with recorded objects.
//! - [`privileged`]: whether a root-only test runs here (and a loud skip when not), one at a time.
//! - [`sandbox`]: cgroups, network namespaces and processes placed in them, for privileged
//!   tests (removed on drop).

pub mod bench_capture;
pub mod drive;
pub mod fixtures;
pub mod fuzz;
pub mod kubeapi;
pub mod load;
pub mod otlp;
pub mod output;
pub mod pcap;
pub mod privileged;
pub mod process;
pub mod prometheus;
pub mod sandbox;
pub mod server_traffic;
pub mod standin;
pub mod synth;
pub mod tap;
pub mod traffic;
pub mod wire;
