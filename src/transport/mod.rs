//! The network edges of the running agent: the inbound SMTP listener ([`smtp_in`]), outbound
//! delivery to MX hosts and configured routes ([`smtp_out`]) and the IMAP edge poller ([`imap`]).
//! They know nothing of S/MIME or the queue's storage: each talks to the rest of the agent through
//! a small trait (`Reception`, `MailboxSpool`) or returns a classified result (`DeliveryError`),
//! so they can be tested against real peers on loopback without the rest of the agent.

pub mod imap;
pub mod mx;
pub mod smtp_in;
pub mod smtp_out;
pub mod tls;
