//! The IMAP edge poller (`transport::imap`) against a real Dovecot on loopback: messages are
//! stored exactly once, byte for byte, before they are marked `\Seen` or moved; a rejected
//! password is tried once and reported; a crash between storing and flagging delivers nothing
//! twice; `run` picks up new mail through IDLE and stops promptly on shutdown; TLS with the
//! test CA in `tls_ca`.
//!
//! Needs: `DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd` and `openssl`
//! (a missing program fails the test with that command; nothing is skipped). Runs as root (as
//! CI does): Dovecot's mail processes run as the `dovecot` user.

mod support;

use std::net::TcpListener;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use direct_agent::config::{ConnTls, ImapAfter, ImapConfig};
use direct_agent::transport::imap::{
    ImapError, MailboxSpool, MemorySpool, PollStats, poll_once, run,
};
use support::dovecot::{Dovecot, crlf};

const USER: &str = "edge@hisp.test";
const PASSWORD: &str = "s3cret pass";
const PASSWORD_ENV: &str = "DIRECT_AGENT_TEST_IMAP_PASSWORD";
const WRONG_PASSWORD_ENV: &str = "DIRECT_AGENT_TEST_IMAP_WRONG_PASSWORD";
const UNSET_ENV: &str = "DIRECT_AGENT_TEST_IMAP_UNSET_PASSWORD";

/// Set the password variables, once, before any test does anything else.
fn passwords() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this first and `Once` makes the others wait until it is
        // done, so no other thread of ours reads the environment while it is written.
        unsafe {
            std::env::set_var(PASSWORD_ENV, PASSWORD);
            std::env::set_var(WRONG_PASSWORD_ENV, "not the password");
            std::env::remove_var(UNSET_ENV);
        }
    });
}

fn config(dovecot: &Dovecot) -> ImapConfig {
    config_for_port(dovecot.port)
}

/// Plain IMAP to 127.0.0.1:`port` as `USER`, IDLE on, `after = "seen"`.
fn config_for_port(port: u16) -> ImapConfig {
    ImapConfig {
        name: Some("imap:test-hisp".into()),
        host: "127.0.0.1".into(),
        port,
        tls: ConnTls::None,
        username: USER.into(),
        password_env: PASSWORD_ENV.into(),
        mailbox: "INBOX".into(),
        poll_interval: "1h".into(),
        idle: true,
        after: ImapAfter::Seen,
        processed_mailbox: "Processed".into(),
        tls_ca: None,
    }
}

/// A Direct-like message: LF line ends (as an MDA writes files), a Message-ID, an opaque body.
fn message(n: usize) -> Vec<u8> {
    format!(
        "From: hisp-b@direct.hisp-b.test\n\
         To: edge@direct.hisp-a.test\n\
         Subject: immunization update {n}\n\
         Message-ID: <msg-{n}@direct.hisp-b.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         MIAGCSqGSIb3DQEHA6CAMIACAQAxggFMMIIBSAIBADAwMCQxIjAgBgNVBAMMGURpcmVjdCBU\n\
         ZXN0IHtufSBtZXNzYWdlIGJvZHkgbnVtYmVyIHtufQAAAAAAAAAAAAAAAAAAAAAA{n}\n"
    )
    .into_bytes()
}

fn message_ids(spool: &MemorySpool) -> Vec<Option<String>> {
    spool
        .messages()
        .iter()
        .map(|m| m.message_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_each_message_once_then_marks_it_seen() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    let sent: Vec<Vec<u8>> = (1..=3).map(message).collect();
    for m in &sent {
        dovecot.deliver(USER, m);
    }
    let spool = Arc::new(MemorySpool::new());
    let cfg = config(&dovecot);

    let stats = poll_once(&cfg, spool.clone()).await.expect("first poll");
    assert_eq!(
        stats,
        PollStats {
            fetched: 3,
            stored: 3,
            duplicates: 0,
            flagged: 3
        }
    );

    let stored = spool.messages();
    assert_eq!(stored.len(), 3, "exactly the three delivered messages");
    let on_server = dovecot.messages(USER, "INBOX").await;
    assert_eq!(on_server.len(), 3);
    for (i, (kept, served)) in stored.iter().zip(&on_server).enumerate() {
        assert_eq!(kept.account, "imap:test-hisp");
        assert_eq!(kept.uid, served.uid);
        assert_eq!(
            kept.raw, served.body,
            "message {i}: bytes as Dovecot serves them"
        );
        assert_eq!(
            kept.raw,
            crlf(&sent[i]),
            "message {i}: the delivered bytes, CRLF"
        );
        assert_eq!(
            kept.message_id.as_deref(),
            Some(format!("msg-{}@direct.hisp-b.test", i + 1).as_str())
        );
        assert!(served.seen(), "UID {} is \\Seen after storage", served.uid);
    }
    assert_eq!(
        stored.iter().map(|m| m.uidvalidity).collect::<Vec<_>>(),
        vec![stored[0].uidvalidity; 3]
    );

    // A second poll finds nothing new and stores nothing.
    let again = poll_once(&cfg, spool.clone()).await.expect("second poll");
    assert_eq!(again, PollStats::default());
    assert_eq!(spool.store_calls(), 3);
    assert_eq!(spool.messages().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_move_moves_stored_messages_to_a_created_processed_mailbox() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    for n in 1..=3 {
        dovecot.deliver(USER, &message(n));
    }
    assert!(
        !dovecot
            .mailboxes(USER)
            .await
            .contains(&"Processed".to_string()),
        "Processed does not exist before the poll"
    );
    let spool = Arc::new(MemorySpool::new());
    let cfg = ImapConfig {
        after: ImapAfter::Move,
        ..config(&dovecot)
    };

    let stats = poll_once(&cfg, spool.clone()).await.expect("poll");
    assert_eq!((stats.stored, stats.flagged), (3, 3));
    assert!(
        dovecot.messages(USER, "INBOX").await.is_empty(),
        "INBOX emptied"
    );
    let processed = dovecot.messages(USER, "Processed").await;
    assert_eq!(processed.len(), 3, "all three moved to Processed");
    let mut moved: Vec<Vec<u8>> = processed.into_iter().map(|m| m.body).collect();
    let mut kept: Vec<Vec<u8>> = spool.messages().into_iter().map(|m| m.raw).collect();
    moved.sort();
    kept.sort();
    assert_eq!(moved, kept, "what was moved is what was stored");

    let again = poll_once(&cfg, spool.clone()).await.expect("second poll");
    assert_eq!(again, PollStats::default());
    assert_eq!(spool.store_calls(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_password_is_tried_once_and_reported() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    dovecot.deliver(USER, &message(1));
    let spool = Arc::new(MemorySpool::new());
    let cfg = ImapConfig {
        password_env: WRONG_PASSWORD_ENV.into(),
        ..config(&dovecot)
    };

    let err = poll_once(&cfg, spool.clone())
        .await
        .expect_err("wrong password");
    match &err {
        ImapError::AuthRejected { credential, reason } => {
            assert_eq!(credential, "imap:test-hisp");
            assert!(reason.contains("AUTHENTICATIONFAILED"), "{reason}");
        }
        other => panic!("expected AuthRejected, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(
        !err.to_string().contains("not the password"),
        "the password never appears in errors: {err}"
    );
    assert_eq!(dovecot.wait_auth_failures(1, Duration::from_secs(5)), 1);
    assert_eq!(
        dovecot.auth_failures(Duration::from_millis(500)),
        1,
        "exactly one LOGIN attempt:\n{}",
        dovecot.log()
    );

    assert!(spool.messages().is_empty());
    assert!(!dovecot.messages(USER, "INBOX").await[0].seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_gives_up_on_a_rejected_password() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    dovecot.deliver(USER, &message(1));
    let spool = Arc::new(MemorySpool::new());
    let cfg = ImapConfig {
        password_env: WRONG_PASSWORD_ENV.into(),
        ..config(&dovecot)
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let result = tokio::time::timeout(Duration::from_secs(30), run(cfg, spool.clone(), shutdown))
        .await
        .expect("run returns on a rejected password");
    assert!(
        matches!(result, Err(ImapError::AuthRejected { .. })),
        "{result:?}"
    );
    assert_eq!(dovecot.wait_auth_failures(1, Duration::from_secs(5)), 1);
    assert_eq!(
        dovecot.auth_failures(Duration::from_millis(500)),
        1,
        "no retry after a rejected password:\n{}",
        dovecot.log()
    );
    assert!(spool.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unset_password_variable_is_a_configuration_error_without_connecting() {
    passwords();
    // Something listening where the server would be: it must see no connection.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let cfg = ImapConfig {
        password_env: UNSET_ENV.into(),
        ..config_for_port(listener.local_addr().expect("addr").port())
    };
    let err = poll_once(&cfg, Arc::new(MemorySpool::new()))
        .await
        .expect_err("no password");
    match &err {
        ImapError::Configuration(why) => assert!(why.contains(UNSET_ENV), "{why}"),
        other => panic!("expected Configuration, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(
        listener.accept().is_err(),
        "no connection was made without a password"
    );

    // `run` stops on it too, instead of retrying.
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        run(cfg, Arc::new(MemorySpool::new()), shutdown),
    )
    .await
    .expect("run returns on a configuration error");
    assert!(
        matches!(result, Err(ImapError::Configuration(_))),
        "{result:?}"
    );
}

/// A spool that stores (durably, in memory) and then lets the test "crash" the poller: the
/// first `store` reports on `stored` and does not return until the test, having dropped the
/// poll (the agent "died"), says so on `release`. The poll can therefore never get as far as
/// flagging the message.
struct CrashAfterStore {
    inner: MemorySpool,
    stored: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl MailboxSpool for CrashAfterStore {
    fn already_stored(&self, account: &str, v: u32, uid: u32, mid: Option<&str>) -> bool {
        self.inner.already_stored(account, v, uid, mid)
    }
    fn store(
        &self,
        account: &str,
        v: u32,
        uid: u32,
        mid: Option<&str>,
        raw: &[u8],
    ) -> Result<(), String> {
        self.inner.store(account, v, uid, mid, raw)?;
        if let Some(tx) = self.stored.lock().expect("lock").take() {
            let _ = tx.send(());
        }
        let release = self.release.lock().expect("lock").take();
        if let Some(release) = release {
            let _ = release.recv();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_store_and_flag_delivers_nothing_twice() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    let sent = message(7);
    dovecot.deliver(USER, &sent);
    let cfg = config(&dovecot);
    let (stored_tx, stored_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let spool = Arc::new(CrashAfterStore {
        inner: MemorySpool::new(),
        stored: Mutex::new(Some(stored_tx)),
        release: Mutex::new(Some(release_rx)),
    });

    // The poll is dropped (the agent "dies", connection and all) once the message is stored
    // and before the store call has returned to it.
    tokio::select! {
        _ = stored_rx => {}
        r = poll_once(&cfg, spool.clone()) => panic!("the poll finished before the crash: {r:?}"),
    }
    release_tx
        .send(())
        .expect("the store call waits for release");
    assert_eq!(spool.inner.store_calls(), 1);
    let on_server = dovecot.messages(USER, "INBOX").await;
    assert_eq!(on_server.len(), 1);
    assert!(
        !on_server[0].seen(),
        "not flagged: the crash came first\n{}",
        dovecot.log()
    );

    // After the "restart": the message is found again, recognised as stored, and flagged.
    let stats = poll_once(&cfg, spool.clone())
        .await
        .expect("poll after crash");
    assert_eq!(
        stats,
        PollStats {
            fetched: 1,
            stored: 0,
            duplicates: 1,
            flagged: 1
        }
    );
    assert_eq!(spool.inner.store_calls(), 1, "store was not called again");
    assert_eq!(spool.inner.messages().len(), 1);
    assert_eq!(spool.inner.messages()[0].raw, crlf(&sent));
    assert!(dovecot.messages(USER, "INBOX").await[0].seen());

    // And the same holds when only the Message-ID is known: a copy of the message under a new
    // UID (e.g. the HISP re-delivered it) is not stored again.
    dovecot.deliver(USER, &sent);
    let stats = poll_once(&cfg, spool.clone())
        .await
        .expect("poll of the copy");
    assert_eq!((stats.stored, stats.duplicates, stats.flagged), (0, 1, 1));
    assert_eq!(message_ids(&spool.inner).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_idles_picks_up_new_mail_and_stops_promptly() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    dovecot.deliver(USER, &message(1));
    let spool = Arc::new(MemorySpool::new());
    // poll_interval is an hour: only IDLE can bring in the second message in time.
    let cfg = config(&dovecot);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(run(cfg, spool.clone(), shutdown));

    let wait_for = |n: usize| {
        let spool = spool.clone();
        async move {
            let start = Instant::now();
            while spool.messages().len() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "only {} of {n} messages arrived",
                    spool.messages().len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await;
    // Let the poller settle into IDLE, then deliver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    dovecot.deliver(USER, &message(2));
    wait_for(2).await;
    assert_eq!(
        message_ids(&spool),
        vec![
            Some("msg-1@direct.hisp-b.test".to_string()),
            Some("msg-2@direct.hisp-b.test".to_string())
        ]
    );
    // The flag follows the store on the same session; give it a moment.
    let start = Instant::now();
    while !dovecot
        .messages(USER, "INBOX")
        .await
        .iter()
        .all(|m| m.seen())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "messages not \\Seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stopping = Instant::now();
    stop.send(true).expect("poller listens");
    let result = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("run stops after shutdown")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert_eq!(spool.store_calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_without_idle_polls_every_interval() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    let spool = Arc::new(MemorySpool::new());
    let cfg = ImapConfig {
        idle: false,
        poll_interval: "300ms".into(),
        ..config(&dovecot)
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(run(cfg, spool.clone(), shutdown));
    tokio::time::sleep(Duration::from_millis(500)).await;
    dovecot.deliver(USER, &message(3));
    let start = Instant::now();
    while spool.messages().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not picked up by polling"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).expect("poller listens");
    let result = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .expect("run stops after shutdown")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(spool.store_calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_starttls_with_the_test_ca() {
    passwords();
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    dovecot.deliver(USER, &message(1));
    dovecot.deliver(USER, &message(2));
    let spool = Arc::new(MemorySpool::new());

    let tls = ImapConfig {
        host: "localhost".into(),
        port: dovecot.tls_port,
        tls: ConnTls::Tls,
        tls_ca: Some(dovecot.ca_pem()),
        ..config(&dovecot)
    };
    let stats = poll_once(&tls, spool.clone()).await.expect("poll over TLS");
    assert_eq!((stats.stored, stats.flagged), (2, 2));

    dovecot.deliver(USER, &message(3));
    let starttls = ImapConfig {
        host: "127.0.0.1".into(),
        tls: ConnTls::Starttls,
        tls_ca: Some(dovecot.ca_pem()),
        ..config(&dovecot)
    };
    let stats = poll_once(&starttls, spool.clone())
        .await
        .expect("poll over STARTTLS");
    assert_eq!((stats.stored, stats.flagged), (1, 1));
    assert_eq!(spool.messages().len(), 3);
    assert!(
        dovecot
            .messages(USER, "INBOX")
            .await
            .iter()
            .all(|m| m.seen())
    );

    // Without the test CA the server's certificate is not trusted: a transient failure (the
    // certificate may be fixed), and nothing is logged in.
    dovecot.deliver(USER, &message(4));
    let untrusted = ImapConfig {
        tls_ca: None,
        ..tls.clone()
    };
    let err = poll_once(&untrusted, spool.clone())
        .await
        .expect_err("untrusted certificate");
    assert!(
        err.is_transient() && err.to_string().contains("TLS handshake"),
        "{err}"
    );
    assert_eq!(spool.messages().len(), 3);
    assert!(
        dovecot.wait_log("unknown ca", Duration::from_secs(5)),
        "Dovecot saw the client refuse its certificate:\n{}",
        dovecot.log()
    );
    let log = dovecot.log();
    let client = log
        .lines()
        .filter(|l| l.contains("Login: user=<") && l.contains("rip=127.0.0.1,"));
    for login in client {
        assert!(login.contains(", TLS,"), "login without TLS: {login}");
    }
    assert_eq!(
        dovecot.client_logins(),
        2,
        "one login over TLS, one over STARTTLS, none without trust:\n{}",
        dovecot.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stops_within_the_grace_period_when_the_server_never_answers() {
    passwords();
    // A peer that accepts connections (in the kernel's backlog) and never sends a greeting.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = config_for_port(silent.local_addr().expect("addr").port());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(run(cfg, Arc::new(MemorySpool::new()), shutdown));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    stop.send(true).expect("poller listens");
    let result = tokio::time::timeout(Duration::from_secs(15), poller)
        .await
        .expect("run stops although the peer is stuck")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(7),
        "stopped in {:?} (grace is 5 s)",
        stopping.elapsed()
    );
}
