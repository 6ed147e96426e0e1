//! Message disposition notifications (RFC 8098) as Direct uses them (Implementation Guide for
//! Delivery Notification in Direct v1.0): reading a message's request for notifications and
//! building the inner message of an MDN ([`build`]), and recognising and reading received MDNs
//! and DSNs ([`parse`]). No I/O: an MDN built here is sealed like any Direct message with
//! [`crate::message::seal_inner`]; a received one is opened with [`crate::message::open()`] and
//! its inner message handed to [`parse::parse_report`].
//!
//! ```text
//! received message --open--> protected headers --requested--> NotificationRequest
//!     --build_mdn(processed | dispatched | failed)--> inner MDN --seal_inner--> Direct message
//! received MDN/DSN --open--> inner --notification_kind / parse_report--> Report (for tracking)
//! ```

pub mod build;
pub mod dsn;
pub mod parse;

pub use build::{BuiltMdn, Disposition, MdnRequest, NotificationRequest, build_mdn, requested};
pub use parse::{
    DispositionKind, DsnRecipient, DsnReport, MdnError, MdnReport, NotificationKind,
    ParsedDisposition, Report, notification_kind, parse_report,
};

/// The Direct extension (IG for Delivery Notification §3): as a Disposition-Notification-Options
/// parameter it asks for timely and reliable delivery notification; as a field of the report part
/// it marks an MDN sent in answer to such a request.
pub const FINAL_DESTINATION_DELIVERY: &str = "X-DIRECT-FINAL-DESTINATION-DELIVERY";
