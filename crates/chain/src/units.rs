//! Cents and a token's smallest units. A budget counts whole cents; a dollar stablecoin with
//! `decimals` decimals counts 10^decimals units to the dollar, so a cent is
//! 10^(decimals - 2) units (10,000 for six decimals).

/// The units of `cents` for a token of `decimals` (at least 2) decimals; `None` when negative,
/// or when the token cannot express a cent.
pub fn cents_to_units(cents: i64, decimals: u8) -> Option<u128> {
    let per_cent = 10u128.checked_pow(u32::from(decimals).checked_sub(2)?)?;
    u128::try_from(cents).ok()?.checked_mul(per_cent)
}

/// The whole cents in `units` (rounded down), and whether a fraction of a cent was left over.
pub fn units_to_cents(units: u128, decimals: u8) -> Option<(i64, bool)> {
    let per_cent = 10u128.checked_pow(u32::from(decimals).checked_sub(2)?)?;
    let cents = i64::try_from(units / per_cent).ok()?;
    Some((cents, !units.is_multiple_of(per_cent)))
}

/// `cents` as a decimal amount of dollars ("12.05"): how a wallet tool takes an amount in
/// whole tokens.
pub fn cents_as_decimal(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cent_is_ten_thousand_units_of_a_six_decimal_token() {
        assert_eq!(cents_to_units(1, 6), Some(10_000));
        assert_eq!(cents_to_units(1_500, 6), Some(15_000_000));
        assert_eq!(cents_to_units(-1, 6), None);
        assert_eq!(cents_to_units(1, 1), None);
        assert_eq!(units_to_cents(15_000_001, 6), Some((1_500, true)));
        assert_eq!(units_to_cents(15_000_000, 6), Some((1_500, false)));
        assert_eq!(cents_as_decimal(1_505), "15.05");
        assert_eq!(cents_as_decimal(7), "0.07");
    }
}
