//! The missed-call report (`backstop report`): what came in, by hour of
//! day and day of week; how the calls ended; how far callers got through
//! the intake; and how fast they were called back. Read from the lead store
//! or `leads.jsonl`; written as text, JSON, CSV or one self-contained HTML
//! page with SVG charts.
