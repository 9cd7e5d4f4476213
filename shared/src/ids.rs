//! Coupon and user identifiers: positive signed 64-bit integers, as MySQL's BIGINT
//! holds them. Parsing is the only way to build one, so an out-of-range id can not
//! reach Redis or MySQL.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value is not a valid id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("must be an integer from 1 to 9223372036854775807")]
    OutOfRange,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

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
                // Only plain decimal digits: "+5", " 5" or "05x" are not ids.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdError::OutOfRange);
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
}
