//! Coupon and user identifiers: positive signed 64-bit integers, as MySQL's BIGINT
//! holds them. Parsing is the only way to build one, so an out-of-range id can not
//! reach Redis or MySQL.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value is not a valid id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("must be an integer from 1 to 9223372036854775807")]
    OutOfRange,
}

/// Reads a JSON integer, also written as a number with a zero fraction
/// (`42.0`): JSON Schema's `integer`, which the OpenAPI document declares,
/// counts it as one.
struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer from 1 to 9223372036854775807")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(IdError::OutOfRange))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // 2^63 is the first f64 past i64::MAX; every f64 below it with no
        // fraction is an exact i64.
        if v.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v) {
            Ok(v as i64)
        } else {
            Err(E::custom(IdError::OutOfRange))
        }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(into = "i64")]
        pub struct $name(i64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = deserializer.deserialize_i64(IntegerVisitor)?;
                Self::new(value).map_err(de::Error::custom)
            }
        }

        impl $name {
            /// Accepts 1..=i64::MAX.
            pub fn new(value: i64) -> Result<Self, IdError> {
                if value >= 1 { Ok(Self(value)) } else { Err(IdError::OutOfRange) }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdError;
            fn try_from(value: i64) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                // Plain decimal digits, or a number with no fraction as a JSON
                // Schema `integer` may be written (`42.0`, `4.2e1`); never a
                // sign, a space or trailing text ("+5", " 5", "05x").
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    let number = s.bytes().next().is_some_and(|b| b.is_ascii_digit());
                    let value = s.parse::<f64>().ok().filter(|_| number).ok_or(IdError::OutOfRange)?;
                    return IntegerVisitor
                        .visit_f64::<de::value::Error>(value)
                        .map_err(|_| IdError::OutOfRange)
                        .and_then(Self::new);
                }
                s.parse::<i64>().map_err(|_| IdError::OutOfRange).and_then(Self::new)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A coupon's id (`coupons.id`).
    CouponId
);
id_type!(
    /// A user's id, as the client sends it.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_exactly_the_signed_bigint_positive_range() {
        assert!(CouponId::new(0).is_err());
        assert!(CouponId::new(-1).is_err());
        assert_eq!(CouponId::new(1).map(CouponId::get), Ok(1));
        assert_eq!("9223372036854775807".parse::<UserId>().map(UserId::get), Ok(i64::MAX));
        assert!("9223372036854775808".parse::<UserId>().is_err());
        assert!("+5".parse::<UserId>().is_err());
        assert!("".parse::<UserId>().is_err());
        assert!(serde_json::from_str::<UserId>("0").is_err());
        assert!(serde_json::from_str::<UserId>("1.5").is_err());
        assert!(serde_json::from_str::<UserId>("\"7\"").is_err());
    }

    #[test]
    fn an_integer_written_with_a_zero_fraction_is_the_integer_json_schema_says_it_is() {
        assert_eq!(
            serde_json::from_str::<UserId>("10700463066.0").map(UserId::get).ok(),
            Some(10_700_463_066)
        );
        assert_eq!("409.0".parse::<UserId>().map(UserId::get), Ok(409));
        assert_eq!("1e3".parse::<UserId>().map(UserId::get), Ok(1000));
        for bad in ["409.5", "0.0", "1e19", "inf", "NaN", "+5.0", " 5", ".5", "5x"] {
            assert!(bad.parse::<UserId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<UserId>("9223372036854775808.0").is_err());
        let event = rmp_serde::to_vec(&42i64).unwrap();
        assert_eq!(rmp_serde::from_slice::<UserId>(&event).map(UserId::get).ok(), Some(42));
    }
}
