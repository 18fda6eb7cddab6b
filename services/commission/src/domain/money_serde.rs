//! Serde for [`accrue_money::Money`] inside stored rules: `{"currency_code":
//! "USD", "amount": "10.00"}` with the amount as an exact decimal string, read
//! back strictly (an amount with too many decimals fails to load).

use accrue_money::Money;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
struct Repr {
    currency_code: String,
    amount: String,
}

impl From<&Money> for Repr {
    fn from(money: &Money) -> Self {
        Repr { currency_code: money.currency.code().to_string(), amount: money.amount_string() }
    }
}

fn parse<'de, D: Deserializer<'de>>(repr: Repr) -> Result<Money, D::Error> {
    Money::parse(&repr.currency_code, &repr.amount).map_err(serde::de::Error::custom)
}

/// Serializes a [`Money`].
pub fn serialize<S: Serializer>(money: &Money, serializer: S) -> Result<S::Ok, S::Error> {
    Repr::from(money).serialize(serializer)
}

/// Deserializes a [`Money`] strictly.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
    parse::<D>(Repr::deserialize(deserializer)?)
}

/// The same for `Option<Money>` (absent or `null` → `None`).
pub mod option {
    use super::*;

    /// Serializes an optional [`Money`].
    pub fn serialize<S: Serializer>(money: &Option<Money>, serializer: S) -> Result<S::Ok, S::Error> {
        money.as_ref().map(Repr::from).serialize(serializer)
    }

    /// Deserializes an optional [`Money`] strictly.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Money>, D::Error> {
        match Option::<Repr>::deserialize(deserializer)? {
            None => Ok(None),
            Some(repr) => parse::<D>(repr).map(Some),
        }
    }
}
