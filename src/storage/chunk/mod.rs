//! Sealed chunks: a series' readings of one period, compressed into one
//! BLOB row of the `chunks` table (see [`codec`] for the bytes).
pub mod codec;
