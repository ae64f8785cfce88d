//! Routing a call before and while the script runs: which line it is for
//! ([`line`]), whether that line is open, closed or on holiday now
//! ([`schedule`]), and whether the caller is junk ([`junk`]).

pub mod junk;
pub mod line;
pub mod schedule;
