//! The `portway` binary (being written).
fn main() {}
