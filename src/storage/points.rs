//! One series' readings as `(ts, value)` pairs in time order: the order a
//! read asks for, and the merge of two sources that hold different
//! readings (rows and sealed chunks, the table and the head). The bottom of
//! the read path, shared by `chunk`, `read`, `recent` and `export`.

/// Page order by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first.
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

/// One series' (timestamp, value) pairs, in page order.
pub type Points = Vec<(i64, f64)>;

/// One series' rows from two sources that hold different readings (the
/// table or cache, and the head), each in page order: the first `want` of
/// both, in page order.
pub fn merge_points(order: Order, a: Points, b: Points, want: usize) -> Points {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity((a.len() + b.len()).min(want));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < want {
        let first = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match order {
                Order::Desc => x.0 >= y.0,
                Order::Asc => x.0 <= y.0,
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if first { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}
