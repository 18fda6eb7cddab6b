//! A sale event type (DESIGN §4 "Sale event types"). Attribution records it
//! with every sale (the `sales.event_type` column and the saga's JSON, by
//! upper-case name); commission matches it against agreement triggers and
//! conditions. The wire form is `accrue.type.v1.SaleEventType`; each
//! service's codec converts.

/// What happened in a sale.
///
/// Stored (sqlx, feature `sqlx`) and serialized (serde, feature `serde`) by
/// its upper-case name, "SIGNUP" / "PAYMENT" / "RENEWAL": rows and agreement
/// rules written before these types were shared read back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "SCREAMING_SNAKE_CASE"))]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE"))]
pub enum SaleEventType {
    /// A subscription or account was created.
    Signup,
    /// A payment.
    Payment,
    /// A recurring payment.
    Renewal,
}

impl SaleEventType {
    /// Every event type, in wire-number order.
    pub const ALL: [SaleEventType; 3] = [SaleEventType::Signup, SaleEventType::Payment, SaleEventType::Renewal];

    /// The stored name, also used in conditions and breakdowns ("PAYMENT").
    pub fn as_str(self) -> &'static str {
        match self {
            SaleEventType::Signup => "SIGNUP",
            SaleEventType::Payment => "PAYMENT",
            SaleEventType::Renewal => "RENEWAL",
        }
    }

    /// Parses "SIGNUP" / "PAYMENT" / "RENEWAL", or the proto value names
    /// ("SALE_EVENT_TYPE_PAYMENT" …) that agreement conditions may carry.
    /// Case-sensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("SALE_EVENT_TYPE_").unwrap_or(name);
        Self::ALL.into_iter().find(|event| event.as_str() == name)
    }

    /// True for PAYMENT and RENEWAL (the events that count as payments).
    pub fn is_payment(self) -> bool {
        matches!(self, SaleEventType::Payment | SaleEventType::Renewal)
    }
}

#[cfg(test)]
mod tests {
    use super::SaleEventType;

    #[test]
    fn names_round_trip() {
        for event in SaleEventType::ALL {
            assert_eq!(SaleEventType::from_name(event.as_str()), Some(event));
        }
        assert_eq!(SaleEventType::from_name("SALE_EVENT_TYPE_RENEWAL"), Some(SaleEventType::Renewal));
        assert_eq!(SaleEventType::from_name("payment"), None);
    }
}
