//! accrue
fn main() {}
