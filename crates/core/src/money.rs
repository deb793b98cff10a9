//! Money in the ledger: integer micros, millionths of the budget's currency unit (micro-dollars
//! for USD). A model call costs a fraction of a cent, so the ledger keeps micros and sums
//! exactly; what people set and see (transfers, limits, top-ups) is whole cents, 10,000 micros
//! each.

/// Micros in a cent.
pub const MICROS_PER_CENT: i64 = 10_000;

/// `cents` in micros (saturating: a limit near `i64::MAX` stays the largest amount).
pub fn from_cents(cents: i64) -> i64 {
    cents.saturating_mul(MICROS_PER_CENT)
}

/// The whole cents of `micros`, rounded up (what a spend of a fraction of a cent shows as).
pub fn cents_up(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_CENT) + i64::from(micros.rem_euclid(MICROS_PER_CENT) != 0)
}

/// `micros` as cents for people: "15 cents", "0.0037 cents", "-2.5 cents".
pub fn show(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let whole = micros.unsigned_abs() / MICROS_PER_CENT.unsigned_abs();
    let part = micros.unsigned_abs() % MICROS_PER_CENT.unsigned_abs();
    if part == 0 {
        format!("{sign}{whole} cents")
    } else {
        let digits = format!("{part:04}");
        format!("{sign}{whole}.{} cents", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_show_as_cents_exactly() {
        assert_eq!(from_cents(15), 150_000);
        assert_eq!(from_cents(i64::MAX), i64::MAX);
        assert_eq!(show(150_000), "15 cents");
        assert_eq!(show(37), "0.0037 cents");
        assert_eq!(show(125_000), "12.5 cents");
        assert_eq!(show(-25_000), "-2.5 cents");
        assert_eq!(
            (cents_up(0), cents_up(1), cents_up(10_000), cents_up(10_001)),
            (0, 1, 1, 2)
        );
    }
}
