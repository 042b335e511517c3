//! Routing bench: written with the router.
fn main() {}
