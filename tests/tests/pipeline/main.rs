//! The pipeline end to end, without privileges: recorded and synthetic captures (and real
//! clients against the stand-in, through the recording tap) replayed through `tracer_core`,
//! every call checked against ground truth. Also the project's shape (import circles, the core
//! crate's dependencies, a fresh copy of the tree).

mod adversarial;
mod architecture;
mod fast_path;
mod gap_cost;
mod golden;
mod in_flight;
mod lossy_capture;
mod properties;
mod real_capture;
mod routes;
mod single_loss;
mod splits;
mod standin;
