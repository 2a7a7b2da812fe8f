//! Address pools and the allocator shared by the l2, bgp and f5 providers.
//!
//! (Being written: see issue 4.)
