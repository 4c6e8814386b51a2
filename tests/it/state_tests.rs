//! The coordinator's state apart from the PSOR (`--state`): its lease, fencing epoch,
//! journal and events live in their own Redis, fenced there, and a handle so configured
//! runs no PSOR script.

use std::collections::BTreeSet;
use std::time::Duration;

use pacup::conn::{Psor, PsorOptions};
use pacup::names::PacName;
use pacup::psor::rollout::LeaseHolder;
use pacup::psor::{Mode, Pac};
use pacup::Error;
use redis::Commands;

use crate::support::{pacup, RedisServer};

const PAC: &str = "MyPAC";

fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

fn keys_of(server: &RedisServer) -> BTreeSet<String> {
    let keys: Vec<String> = server.conn().keys("*").expect("KEYS");
    keys.into_iter().collect()
}

async fn connect(server: &RedisServer) -> Psor {
    Psor::connect(&PsorOptions::new(server.url()))
        .await
        .expect("connect")
}

/// A PAC initialised in `psor`, and a handle on it whose state is in `state`.
async fn apart(psor: &RedisServer, state: &RedisServer) -> Pac {
    let name = PacName::new(PAC).unwrap();
    let direct = Pac::new(connect(psor).await, name.clone());
    direct.init(false, "test", None).await.expect("init");
    Pac::new(connect(psor).await, name).with_state(connect(state).await)
}

/// Taking the lease bumps the state Redis's epoch, never the PSOR's; a journal write
/// under an epoch a newer lease replaced is refused there, and nothing of it reaches
/// the PSOR.
#[test]
fn the_lease_fences_journal_writes_in_the_state_redis() {
    let (psor, state) = (RedisServer::start(), RedisServer::start());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pac = apart(&psor, &state).await;
        let psor_before = keys_of(&psor);
        let psor_epoch: Option<String> = psor.conn().hget(key("meta"), "epoch").unwrap();
        let ttl = Duration::from_secs(30);
        let old = pac
            .acquire_lease(&LeaseHolder::this_process("old"), ttl)
            .await
            .unwrap();
        let held = pac
            .acquire_lease(&LeaseHolder::this_process("other"), ttl)
            .await
            .unwrap_err();
        assert!(matches!(held, Error::LeaseHeld { .. }), "{held}");
        // The old coordinator's lease expired while it slept; another took over.
        let _: () = state.conn().del(key("lock")).unwrap();
        let new = pac
            .acquire_lease(&LeaseHolder::this_process("new"), ttl)
            .await
            .unwrap();
        assert!(new.epoch > old.epoch);
        let fields = [("id", format!("{PAC}-1"))];
        let stale = pac
            .rollout_write(old.epoch, &fields, &[], None)
            .await
            .unwrap_err();
        assert!(
            matches!(stale, Error::Fenced { ours, current } if ours == old.epoch && current == new.epoch),
            "{stale}"
        );
        assert!(pac.rollout_current().await.unwrap().is_empty());
        let event = [("rollout", format!("{PAC}-1")), ("seq", "1".into())];
        pac.rollout_write(new.epoch, &fields, &event, None)
            .await
            .unwrap();
        assert_eq!(
            pac.rollout_current().await.unwrap().get("id"),
            Some(&format!("{PAC}-1"))
        );
        assert!(!pac.renew_lease(&old, ttl).await.unwrap());
        assert!(pac.renew_lease(&new, ttl).await.unwrap());

        let expected: BTreeSet<String> = ["meta", "lock", "rollout:current", "events"]
            .map(key)
            .into();
        assert_eq!(keys_of(&state), expected);
        let meta: std::collections::HashMap<String, String> =
            state.conn().hgetall(key("meta")).unwrap();
        assert_eq!(
            meta.into_iter().collect::<Vec<_>>(),
            vec![("epoch".to_string(), new.epoch.to_string())]
        );
        assert_eq!(keys_of(&psor), psor_before, "the PSOR's keys changed");
        let after: Option<String> = psor.conn().hget(key("meta"), "epoch").unwrap();
        assert_eq!(after, psor_epoch, "the PSOR's epoch moved");
    });
}

/// A handle whose state is apart refuses every PSOR script, fenced or not: the PSOR's
/// scripts check the PSOR's epoch, which does not fence this coordinator. Nothing is
/// written. Its lease is taken in the state Redis without asking the PSOR whether the
/// PAC exists (a vendor's PSOR has no pacup PAC record; a rollout's preflight asks the
/// plan's `store_state`), and the PSOR is left as it was.
#[test]
fn a_handle_with_its_state_apart_writes_nothing_to_the_psor() {
    let (psor, state) = (RedisServer::start(), RedisServer::start());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pac = apart(&psor, &state).await;
        let lease = pac
            .acquire_lease(&LeaseHolder::this_process("c"), Duration::from_secs(30))
            .await
            .unwrap();
        let before = keys_of(&psor);
        let events: u64 = psor.conn().xlen(key("events")).unwrap();
        for e in [
            pac.set_mode(Mode::Quiesce, "c", Some(lease.epoch))
                .await
                .unwrap_err(),
            pac.unquiesce("1.0.0", "c", lease.epoch).await.unwrap_err(),
            pac.submit_jobs_once(1, "x").await.unwrap_err(),
        ] {
            assert!(
                matches!(e, Error::StateApart { .. }),
                "not refused as apart: {e}"
            );
            assert!(e.to_string().contains("--state"), "{e}");
        }
        assert_eq!(keys_of(&psor), before);
        assert_eq!(psor.conn().xlen::<_, u64>(key("events")).unwrap(), events);

        let vendor = Pac::new(connect(&psor).await, PacName::new("Other").unwrap())
            .with_state(connect(&state).await);
        vendor
            .acquire_lease(&LeaseHolder::this_process("c"), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(keys_of(&state).iter().any(|k| k == "pac:{Other}:lock"));
        assert_eq!(keys_of(&psor), before);
    });
}

/// A malformed `--state` URL is exit 2 naming the flag, before anything connects.
#[test]
fn a_malformed_state_url_is_exit_2() {
    let psor = RedisServer::start();
    let out = pacup()
        .args([
            "--psor",
            &psor.url(),
            "--state",
            "nowhere",
            "rollout",
            "status",
            PAC,
        ])
        .run();
    out.code(2);
    out.stderr_contains("invalid --state \"nowhere\"");
}
