//! The chunk codec: a run of one series' readings, `(ts_ms, value)` in
//! strictly increasing time order, as one compact byte string.
//!
//! Timestamps and values are compressed as two columns by pco (the pcodec
//! crate): timestamps with its delta encodings (a 1 Hz series becomes
//! almost nothing), values with its float modes, which detect decimal
//! quantisation (readings of two decimals) and cost a few bits a value
//! when adjacent values are close. Both are lossless: a value comes back
//! with the same `f64` bits (`-0.0`, subnormals and the ±1e300 extremes
//! included).
//!
//! Layout (little-endian): format byte, reading count `u32`, length of the
//! timestamp column `u32`, the timestamp column, the value column, and an
//! FNV-1a 64-bit checksum of everything before it. Decoding checks the
//! checksum before pco sees any byte, then the counts and the time order,
//! so a damaged blob is an error, never a panic or a wrong reading.

use std::fmt;

/// The format byte this build writes and reads.
pub const FORMAT: u8 = 1;
/// Format byte, count, timestamp column length.
const HEADER: usize = 1 + 4 + 4;
const CHECKSUM: usize = 8;

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged chunk: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

fn err(what: impl Into<String>) -> CodecError {
    CodecError(what.into())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Encodes readings in strictly increasing time order. Fails (rather than
/// store something that would not decode) on an unordered input or one of
/// more than `u32::MAX` readings.
pub fn encode(points: &[(i64, f64)]) -> Result<Vec<u8>, CodecError> {
    if points.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(err("timestamps not strictly increasing"));
    }
    let n = u32::try_from(points.len()).map_err(|_| err("too many readings"))?;
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let config = pco::ChunkConfig::default();
    let ts_col = pco::standalone::simple_compress(&ts, &config)
        .map_err(|e| err(format!("timestamps: {e}")))?;
    let value_col = pco::standalone::simple_compress(&values, &config)
        .map_err(|e| err(format!("values: {e}")))?;
    let ts_len = u32::try_from(ts_col.len()).map_err(|_| err("timestamp column too long"))?;
    let mut out = Vec::with_capacity(HEADER + ts_col.len() + value_col.len() + CHECKSUM);
    out.push(FORMAT);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&ts_len.to_le_bytes());
    out.extend_from_slice(&ts_col);
    out.extend_from_slice(&value_col);
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

fn header(blob: &[u8]) -> Result<(usize, usize), CodecError> {
    if blob.len() < HEADER + CHECKSUM {
        return Err(err(format!("{} bytes, shorter than a header", blob.len())));
    }
    if blob[0] != FORMAT {
        return Err(err(format!("unknown format {}", blob[0])));
    }
    let n = u32::from_le_bytes(blob[1..5].try_into().expect("4 bytes")) as usize;
    let ts_len = u32::from_le_bytes(blob[5..9].try_into().expect("4 bytes")) as usize;
    Ok((n, ts_len))
}

/// Decodes a blob written by [`encode`].
pub fn decode(blob: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let (n, ts_len) = header(blob)?;
    let (body, sum) = blob.split_at(blob.len() - CHECKSUM);
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(err("checksum mismatch"));
    }
    let cols = &body[HEADER..];
    if ts_len > cols.len() {
        return Err(err("timestamp column longer than the chunk"));
    }
    let (ts_col, value_col) = cols.split_at(ts_len);
    // The checksum makes damage by accident detected above; pco is still
    // kept from taking the process down on a blob crafted to pass it.
    let decoded = std::panic::catch_unwind(|| {
        let ts = pco::standalone::simple_decompress::<i64>(ts_col)
            .map_err(|e| err(format!("timestamps: {e}")))?;
        let values = pco::standalone::simple_decompress::<f64>(value_col)
            .map_err(|e| err(format!("values: {e}")))?;
        Ok::<_, CodecError>((ts, values))
    })
    .map_err(|_| err("undecodable column"))??;
    let (ts, values) = decoded;
    if ts.len() != n || values.len() != n {
        return Err(err(format!(
            "header says {n} readings, columns hold {} and {}",
            ts.len(),
            values.len()
        )));
    }
    if ts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(err("timestamps out of order"));
    }
    Ok(ts.into_iter().zip(values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: f64 = crate::sensors::actor::MAX_ABS_VALUE;

    fn same(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    /// Any finite value the sensors accept, weighted towards the awkward ones.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(MAX),
            Just(-MAX),
            Just(f64::MIN_POSITIVE),
            Just(f64::from_bits(1)),
            Just(-f64::from_bits(1)),
            any::<u64>()
                .prop_map(f64::from_bits)
                .prop_filter("finite, within bounds", |v| v.abs() <= MAX),
            (-100_000i64..100_000).prop_map(|c| c as f64 / 100.0),
            -1e6f64..1e6,
        ]
    }

    /// Strictly increasing timestamps: a start anywhere (before 1970 too)
    /// and steps regular, jittered or wide.
    fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
        (
            -4_000_000_000_000i64..4_000_000_000_000,
            prop::collection::vec(
                (
                    prop_oneof![Just(1i64), Just(1000), 990i64..1010, 1i64..10_000_000],
                    value(),
                ),
                0..600,
            ),
        )
            .prop_map(|(start, steps)| {
                let mut ts = start;
                steps
                    .into_iter()
                    .map(|(step, v)| {
                        ts += step;
                        (ts, v)
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn round_trip_is_bit_exact(points in series()) {
            let blob = encode(&points).unwrap();
            prop_assert_eq!(header(&blob).unwrap().0, points.len());
            let back = decode(&blob).unwrap();
            prop_assert!(same(&points, &back));
        }

        /// Any damage to a blob, a flipped byte or a cut, is an error.
        #[test]
        fn damage_is_an_error_not_a_panic(
            points in series(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let blob = encode(&points).unwrap();
            let mut flipped = blob.clone();
            let i = at.index(flipped.len());
            flipped[i] ^= flip;
            prop_assert!(decode(&flipped).is_err());
            let short = &blob[..cut.index(blob.len())];
            prop_assert!(decode(short).is_err());
        }
    }

    #[test]
    fn edge_values_and_irregular_timestamps_round_trip() {
        let points = vec![
            (i64::MIN + 1, -MAX),
            (-1, -0.0),
            (0, 0.0),
            (1, f64::from_bits(1)),
            (2, f64::MIN_POSITIVE),
            (1_000_000, MAX),
            (1_000_001, 21.37),
            (i64::MAX, 21.38),
        ];
        assert!(same(&decode(&encode(&points).unwrap()).unwrap(), &points));
        assert!(decode(&encode(&[]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn unordered_or_duplicate_timestamps_are_refused() {
        assert!(encode(&[(2, 1.0), (1, 1.0)]).is_err());
        assert!(encode(&[(1, 1.0), (1, 2.0)]).is_err());
    }

    /// A blob that passes the checksum but whose columns are not pco's
    /// (crafted, not damaged by accident) is still an error.
    #[test]
    fn a_forged_blob_is_an_error() {
        let mut forged = vec![FORMAT];
        forged.extend_from_slice(&3u32.to_le_bytes());
        forged.extend_from_slice(&4u32.to_le_bytes());
        forged.extend_from_slice(&[0xff; 12]);
        let sum = fnv1a(&forged);
        forged.extend_from_slice(&sum.to_le_bytes());
        assert!(decode(&forged).is_err());
        let mut unknown = encode(&[(1, 1.0)]).unwrap();
        unknown[0] = 9;
        assert!(decode(&unknown).unwrap_err().to_string().contains("format"));
    }

    /// Two-decimal readings at 1 Hz, the data the chunks are for, take
    /// about a byte each (`vigil-bench schema` measures them on disk).
    #[test]
    fn two_decimal_one_hertz_data_is_small() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut v = 21.0f64;
        let points: Vec<(i64, f64)> = (0..3600)
            .map(|i| {
                v += (rng.f64() - 0.5) * 0.1;
                (
                    1_795_000_000_000 + i * 1000 + rng.i64(-3..=3),
                    (v * 100.0).round() / 100.0,
                )
            })
            .collect();
        let blob = encode(&points).unwrap();
        assert!(blob.len() < 3600 * 2, "{} bytes", blob.len());
        assert!(same(&decode(&blob).unwrap(), &points));
    }
}
