//! The two verbs of the product: [`seal`] a payload into a Direct message, [`open`] a received
//! Direct message back into verified payloads. Both are pure functions of bytes, credentials,
//! trust inputs and a clock.

pub mod open;
pub mod seal;

pub use open::{Envelope, OpenError, OpenInputs, OpenReport, open, open_owned};
pub use seal::{SealError, SealOptions, Sealed, seal, seal_inner, seal_owned};
