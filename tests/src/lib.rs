//! Test traffic for ollama-tracer: recorded fixtures, Go-style HTTP framing, synthetic captures.
