//! The PSOR scripts' contracts, against a real redis-server: each script is driven into
//! every reply code it declares, and each reply decodes to the typed answer it stands for
//! (the style of redis-rs's own tests: a real server, an exact expected value). The whole
//! run is watched with MONITOR: every key a script touches belongs to a family of
//! `psor::keys`, and every notification goes to the PAC's channel.

use std::collections::BTreeSet;

use pacup::conn::{Psor, PsorOptions};
use pacup::names::{PacName, Product};
use pacup::psor::keys::{self, JOB_GROUP};
use pacup::psor::scripts::*;
use pacup::psor::work::Claim;
use pacup::psor::{JoinRequest, Mode, Pac, StartType};
use redis::Commands;

use crate::support::{Monitor, RedisServer};

const PAC: &str = "MyPAC";

fn key(suffix: &str) -> String {
    format!("pac:{{{PAC}}}:{suffix}")
}

/// Runs a call, checks its typed reply against a pattern and notes the code as produced.
macro_rules! expect {
    ($seen:expr, $pac:expr, $call:expr, $code:literal, $pat:pat if $guard:expr) => {{
        let call = $call;
        let reply = $pac.eval(&call).await.expect("script ran");
        let ok = matches!(reply, $pat if $guard);
        assert!(
            ok,
            "{} answering {}: decoded {:?}",
            name_of(&call),
            $code,
            reply
        );
        $seen.insert((name_of(&call), $code));
        reply
    }};
    ($seen:expr, $pac:expr, $call:expr, $code:literal, $pat:pat) => {{
        let call = $call;
        let reply = $pac.eval(&call).await.expect("script ran");
        // Some replies are plain booleans: the pattern is then `true` or `false`.
        #[allow(clippy::redundant_pattern_matching)]
        let ok = matches!(reply, $pat);
        assert!(
            ok,
            "{} answering {}: decoded {:?}",
            name_of(&call),
            $code,
            reply
        );
        $seen.insert((name_of(&call), $code));
        reply
    }};
}

fn name_of<C: Call>(_: &C) -> &'static str {
    C::lua().name
}

fn product(v: &str) -> Product {
    Product::parse(v, Some("linux-6"), Some("64")).unwrap()
}

/// A join request of `region` for `store` at the PAC's current `gen`.
fn join(
    gen: u64,
    region: &str,
    token: &str,
    store: &str,
    create: Option<Mode>,
    alone: bool,
) -> JoinRequest {
    JoinRequest {
        gen,
        create: create.is_some(),
        store: store.into(),
        mode: create.unwrap_or(Mode::Running),
        region: region.into(),
        host: format!("h-{region}"),
        product: product(store),
        token: token.into(),
        ttl_ms: 60_000,
        interval_ms: 20_000,
        start_type: if alone {
            StartType::Cold
        } else {
            StartType::Warm
        },
        require_no_other_alive: alone,
        resources: vec![("PCT".into(), "TX1".into(), "{}".into())],
    }
}

async fn gen(pac: &Pac) -> u64 {
    pac.snapshot().await.unwrap().gen
}

#[test]
fn every_script_answers_each_of_its_codes_and_touches_only_layout_keys() {
    let server = RedisServer::start();
    let monitor = Monitor::start(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = rt.block_on(drive_every_code(&server));
    let lines = monitor.stop();

    for lua in all() {
        for code in lua.codes {
            assert!(
                seen.contains(&(lua.name, *code)),
                "{} never answered {code}",
                lua.name
            );
        }
    }

    let mut c = server.conn();
    let mut ran = BTreeSet::new();
    let mut touched = 0;
    for l in &lines {
        if l.name() == "EVALSHA" || l.name() == "EVAL" {
            ran.insert(l.arg(1));
        }
        if l.source != "lua" {
            continue;
        }
        if l.name() == "PUBLISH" {
            let channel = l.arg(1);
            assert_eq!(
                keys::shape_of(&channel).map(|s| s.name),
                Some("notify_channel"),
                "{l:?}"
            );
            continue;
        }
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("GETKEYS");
        for a in &l.args {
            cmd.arg(a.as_slice());
        }
        // Commands without keys (TIME, ...) are answered with an error.
        let Ok(ks) = cmd.query::<Vec<String>>(&mut c) else {
            continue;
        };
        for k in ks {
            let shape = keys::shape_of(&k)
                .unwrap_or_else(|| panic!("a script touched {k}, outside the layout: {l:?}"));
            assert!(!shape.channel, "{k} used as a key: {l:?}");
            assert!(k.starts_with(&key("")), "{k} is not of PAC {PAC}: {l:?}");
            touched += 1;
        }
    }
    assert!(touched > 100, "MONITOR saw only {touched} keys");
    for lua in all() {
        assert!(
            ran.contains(lua.script().get_hash()),
            "{} never ran under MONITOR",
            lua.name
        );
    }
}

async fn drive_every_code(server: &RedisServer) -> BTreeSet<(&'static str, &'static str)> {
    let mut seen = BTreeSet::new();
    let psor = Psor::connect(&PsorOptions::new(server.url()))
        .await
        .unwrap();
    let pac = Pac::new(psor, PacName::new(PAC).unwrap());
    let mut raw = server.conn();
    // Every call must load its script itself.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();

    // No PAC yet.
    expect!(
        seen,
        pac,
        Submit { count: 1, id: "" },
        "NOPAC",
        SubmitReply::NoPac
    );
    let lease = AcquireLease {
        holder: "test",
        ttl_ms: 60_000,
        pac_here: true,
    };
    expect!(seen, pac, lease.clone(), "NOPAC", AcquireReply::NoPac);
    let set_running = SetMode {
        fence: None,
        mode: Mode::Running,
        actor: "test",
    };
    let set_quiesce = SetMode {
        mode: Mode::Quiesce,
        ..set_running.clone()
    };
    expect!(seen, pac, set_running.clone(), "NOPAC", SetModeReply::NoPac);
    let detach_old = DetachOld {
        fence: None,
        actor: "test",
        force: false,
    };
    expect!(
        seen,
        pac,
        detach_old.clone(),
        "NOPAC",
        DetachOldReply::NoPac
    );
    let r1 = join(0, "R1", "t1", "1.0.0", Some(Mode::Running), true);
    expect!(
        seen,
        pac,
        Join {
            req: &r1,
            actor: "test"
        },
        "NOPAC",
        JoinReply::NoPac
    );

    // InitPac.
    let reset = Reset {
        fence: None,
        force: false,
        actor: "test",
        why: "init",
        cold_start: false,
    };
    expect!(seen, pac, reset.clone(), "OK", ResetReply::Ok { gen: 1 });
    expect!(
        seen,
        pac,
        set_running.clone(),
        "NOSTORE",
        SetModeReply::NoStore
    );

    // Region starts.
    let stale = join(999, "R1", "t1", "1.0.0", Some(Mode::Running), true);
    expect!(
        seen,
        pac,
        Join {
            req: &stale,
            actor: "test"
        },
        "CONFLICT",
        JoinReply::Conflict
    );
    let r1 = join(
        gen(&pac).await,
        "R1",
        "t1",
        "1.0.0",
        Some(Mode::Running),
        true,
    );
    expect!(
        seen,
        pac,
        Join {
            req: &r1,
            actor: "test"
        },
        "OK",
        JoinReply::Ok {
            mode: Some(Mode::Running),
            ..
        }
    );
    let again = join(gen(&pac).await, "R1", "t1-other", "1.0.0", None, false);
    expect!(
        seen,
        pac,
        Join {
            req: &again,
            actor: "test"
        },
        "RUNNING",
        JoinReply::Running { .. }
    );
    let alone = join(gen(&pac).await, "R2", "t2", "1.0.0", None, true);
    expect!(
        seen,
        pac,
        Join {
            req: &alone,
            actor: "test"
        },
        "ALIVE",
        JoinReply::Alive { .. }
    );
    let _: () = raw.sadd(key("removing"), "2.0.0").unwrap();
    let removing = join(
        gen(&pac).await,
        "R2",
        "t2",
        "2.0.0",
        Some(Mode::Upgrade),
        false,
    );
    expect!(
        seen,
        pac,
        Join {
            req: &removing,
            actor: "test"
        },
        "REMOVING",
        JoinReply::Removing { .. }
    );
    let _: () = raw.srem(key("removing"), "2.0.0").unwrap();
    let r2 = join(gen(&pac).await, "R2", "t2", "1.0.0", None, false);
    expect!(
        seen,
        pac,
        Join {
            req: &r2,
            actor: "test"
        },
        "OK",
        JoinReply::Ok { .. }
    );

    // Resets refused.
    expect!(seen, pac, reset.clone(), "ALIVE", ResetReply::Alive { .. });
    let _: () = raw.hset(key("meta"), "epoch", 5).unwrap();
    let stale_reset = Reset {
        fence: Some(4),
        ..reset.clone()
    };
    expect!(
        seen,
        pac,
        stale_reset,
        "FENCED",
        ResetReply::Fenced { epoch: 5 }
    );

    // Heartbeats and records.
    let beat = Beat {
        region: "R1",
        token: "t1",
        ttl_ms: 60_000,
        clients: Some(2),
    };
    expect!(
        seen,
        pac,
        beat.clone(),
        "OK",
        Heartbeat::Ok {
            mode: Some(Mode::Running),
            ..
        }
    );
    expect!(
        seen,
        pac,
        Beat {
            token: "nope",
            ..beat
        },
        "LOST",
        Heartbeat::Lost
    );
    let fields = [("listener", "on".to_string())];
    let set = RegionFields {
        region: "R1",
        token: "t1",
        fields: &fields,
    };
    expect!(seen, pac, set.clone(), "OK", Owned::Ok);
    expect!(
        seen,
        pac,
        RegionFields {
            token: "nope",
            ..set
        },
        "LOST",
        Owned::Lost
    );

    // Jobs.
    expect!(
        seen,
        pac,
        Submit { count: 3, id: "" },
        "OK",
        SubmitReply::Ok { first: 1, last: 3 }
    );
    let claim = ClaimJob {
        region: "R1",
        token: "t1",
        reclaim_idle_ms: 600_000,
    };
    expect!(
        seen,
        pac,
        ClaimJob {
            token: "nope",
            ..claim.clone()
        },
        "LOST",
        Claim::Lost
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        if let Claim::Job { entry, job, .. } = expect!(
            seen,
            pac,
            claim.clone(),
            "JOB",
            Claim::Job {
                reclaimed: false,
                ..
            }
        ) {
            held.push((entry, job));
        }
    }
    expect!(seen, pac, claim.clone(), "NONE", Claim::None);
    // R2 takes over a job R1 has held for longer than R2's reclaim time (0).
    let (entry, job) = held[0].clone();
    let takeover = ClaimJob {
        region: "R2",
        token: "t2",
        reclaim_idle_ms: 0,
    };
    expect!(
        seen,
        pac,
        takeover.clone(),
        "JOB",
        Claim::Job {
            reclaimed: true,
            ..
        }
    );
    let done = CompleteJob {
        region: "R1",
        entry: &entry,
        job: &job,
        store: "1.0.0",
        check_claim: false,
    };
    expect!(seen, pac, done.clone(), "FIRST", Completion::First);
    expect!(seen, pac, done.clone(), "REPEATED", Completion::Repeated);
    expect!(
        seen,
        pac,
        CompleteJob {
            region: "R2",
            ..done
        },
        "DUPLICATE",
        Completion::Duplicate
    );
    // R2 takes over another of R1's jobs; R1, whose liveness lapsed meanwhile (frozen
    // past its TTL, say), checks its claim before completing: it is R2's now, so R1's
    // run is dropped and R2's is the one that counts.
    let (entry1, job1) = held[1].clone();
    expect!(seen, pac, takeover, "JOB", Claim::Job { ref entry, .. } if *entry == entry1);
    let stale = CompleteJob {
        region: "R1",
        entry: &entry1,
        job: &job1,
        store: "1.0.0",
        check_claim: true,
    };
    let dups = pac.work_stats().await.unwrap().duplicates;
    expect!(seen, pac, stale.clone(), "RECLAIMED", Completion::Reclaimed);
    let mine = CompleteJob {
        region: "R2",
        ..stale
    };
    expect!(seen, pac, mine, "FIRST", Completion::First);
    assert_eq!(pac.work_stats().await.unwrap().duplicates, dups);
    // A region whose liveness key expired (frozen past its TTL) takes no job until a
    // heartbeat renews it.
    let _: () = redis::cmd("DEL")
        .arg(format!("pac:{{{}}}:region:R1:alive", pac.name()))
        .query_async(&mut pac.psor().conn())
        .await
        .unwrap();
    expect!(seen, pac, claim.clone(), "LAPSED", Claim::Lapsed);
    expect!(seen, pac, beat.clone(), "OK", Heartbeat::Ok { .. });
    let tx = RecordTx {
        tx: "tx-1",
        region: "R1",
    };
    expect!(seen, pac, tx.clone(), "FIRST", true);
    expect!(seen, pac, tx, "REPEAT", false);
    let clients = RecordClients { ok: 2, failed: 1 };
    expect!(seen, pac, clients, "NOROLLOUT", false);

    // The lease and the journal.
    let epoch = match expect!(
        seen,
        pac,
        lease.clone(),
        "OK",
        AcquireReply::Ok { epoch: 6 }
    ) {
        AcquireReply::Ok { epoch } => epoch,
        _ => unreachable!(),
    };
    expect!(seen, pac, lease, "HELD", AcquireReply::Held { .. });
    let value = format!("test {epoch}");
    let renew = RenewLease {
        value: &value,
        ttl_ms: 60_000,
    };
    expect!(seen, pac, renew.clone(), "OK", true);
    expect!(
        seen,
        pac,
        RenewLease {
            value: "other 6",
            ..renew
        },
        "LOST",
        false
    );
    expect!(seen, pac, ReleaseLease { value: "other 6" }, "LOST", false);
    expect!(seen, pac, ReleaseLease { value: &value }, "OK", true);
    let state = [
        ("id", format!("{PAC}-1a")),
        ("state", "running".to_string()),
    ];
    let event = [
        ("action", "preflight".to_string()),
        ("status", "done".to_string()),
    ];
    let write = RolloutWrite {
        fence: epoch,
        state: &state,
        event: &event,
        history: None,
    };
    expect!(seen, pac, write.clone(), "OK", Fenced::Ok(_));
    expect!(
        seen,
        pac,
        RolloutWrite { fence: 3, ..write },
        "FENCED",
        Fenced::Stale { .. }
    );
    expect!(seen, pac, clients, "RECORDED", true);

    // Control commands.
    let send = SendControl {
        fence: Some(epoch),
        host: "h1",
        body: "{}",
    };
    expect!(seen, pac, send.clone(), "OK", Fenced::Ok(()));
    expect!(
        seen,
        pac,
        SendControl {
            fence: Some(1),
            ..send
        },
        "FENCED",
        Fenced::Stale { .. }
    );
    let take = TakeControl {
        host: "h1",
        id: "c1",
        fence: Some(epoch),
    };
    expect!(seen, pac, take.clone(), "OK", TakeReply::Ok);
    expect!(seen, pac, take, "TAKEN", TakeReply::Taken);
    let late = TakeControl {
        host: "h1",
        id: "c2",
        fence: Some(1),
    };
    expect!(seen, pac, late, "FENCED", TakeReply::Fenced { epoch: 6 });

    // Modes: an upgrade store beside the running one.
    expect!(
        seen,
        pac,
        set_running.clone(),
        "NOTHING",
        SetModeReply::Nothing
    );
    expect!(
        seen,
        pac,
        set_quiesce.clone(),
        "NOTHING",
        SetModeReply::Nothing
    );
    expect!(seen, pac, detach_old.clone(), "NONE", DetachOldReply::None);
    let r3 = join(
        gen(&pac).await,
        "R3",
        "t3",
        "2.0.0",
        Some(Mode::Upgrade),
        false,
    );
    expect!(
        seen,
        pac,
        Join {
            req: &r3,
            actor: "test"
        },
        "OK",
        JoinReply::Ok {
            mode: Some(Mode::Upgrade),
            ..
        }
    );
    let r3_claim = ClaimJob {
        region: "R3",
        token: "t3",
        reclaim_idle_ms: 600_000,
    };
    expect!(seen, pac, r3_claim, "MODE", Claim::NotRunning(ref m) if m == "upgrade");
    expect!(
        seen,
        pac,
        set_quiesce.clone(),
        "NORUNNING",
        SetModeReply::NoRunning { .. }
    );
    expect!(
        seen,
        pac,
        detach_old.clone(),
        "LIVE",
        DetachOldReply::Live { .. }
    );
    let forced = DetachOld {
        force: true,
        ..detach_old.clone()
    };
    expect!(
        seen,
        pac,
        forced.clone(),
        "NORUNNING",
        DetachOldReply::NoRunning { .. }
    );
    let fenced_mode = SetMode {
        fence: Some(1),
        ..set_running.clone()
    };
    expect!(
        seen,
        pac,
        fenced_mode,
        "FENCED",
        SetModeReply::Fenced { .. }
    );
    let fenced_detach = DetachOld {
        fence: Some(1),
        ..detach_old.clone()
    };
    expect!(
        seen,
        pac,
        fenced_detach,
        "FENCED",
        DetachOldReply::Fenced { .. }
    );
    expect!(
        seen,
        pac,
        set_running.clone(),
        "OK",
        SetModeReply::Ok { ref changed } if changed == &["2.0.0"]
    );
    expect!(
        seen,
        pac,
        set_quiesce.clone(),
        "OK",
        SetModeReply::Ok { ref changed } if changed == &["1.0.0"]
    );

    // Rollback's store changes.
    let unquiesce = |fence, version| Unquiesce {
        fence,
        version,
        actor: "test",
    };
    expect_store_change(&mut seen, &pac, epoch, unquiesce).await;
    let finalise = |fence, store| SetRunningVersion {
        fence,
        store,
        version: "1.0.1",
    };
    expect_store_change(&mut seen, &pac, epoch, finalise).await;
    let detach = DetachStore {
        fence: epoch,
        version: "2.0.0",
        actor: "test",
    };
    expect!(
        seen,
        pac,
        detach.clone(),
        "LIVE",
        DetachStoreReply::Live { .. }
    );
    expect!(
        seen,
        pac,
        DetachStore {
            version: "9.9.9",
            ..detach.clone()
        },
        "NONE",
        DetachStoreReply::None
    );
    expect!(
        seen,
        pac,
        DetachStore {
            fence: 1,
            ..detach.clone()
        },
        "FENCED",
        DetachStoreReply::Fenced { .. }
    );
    let leave = Leave {
        region: "R3",
        token: "t3",
        state: "stopped",
        actor: "test",
    };
    expect!(
        seen,
        pac,
        Leave {
            token: "nope",
            ..leave.clone()
        },
        "LOST",
        Owned::Lost
    );
    expect!(seen, pac, leave, "OK", Owned::Ok);
    expect!(seen, pac, detach.clone(), "OK", DetachStoreReply::Ok);

    // Deleting the detached store's keys; a foreign key among them is left alone.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
    let batch = vec![
        key("store:2.0.0:meta"),
        key("store:2.0.0:members"),
        key("store:2.0.0:res:PCT"),
        key("ds:stats"),
    ];
    let there: u64 = batch[..3]
        .iter()
        .map(|k| u64::from(raw.exists::<_, bool>(k).unwrap()))
        .sum();
    assert!(there >= 2, "the detached store kept its keys until deleted");
    let unlink = UnlinkBatch {
        version: "2.0.0",
        keys: &batch,
    };
    expect!(seen, pac, unlink, "OK", UnlinkReply::Ok { unlinked } if unlinked == there);
    assert!(raw.exists::<_, bool>(key("ds:stats")).unwrap());
    let live = UnlinkBatch {
        version: "1.0.0",
        keys: &batch[..1],
    };
    expect!(seen, pac, live, "LIVE", UnlinkReply::Live);
    expect!(
        seen,
        pac,
        FinishRemoval { version: "2.0.0" },
        "OK",
        FinishReply::Ok { .. }
    );
    expect!(
        seen,
        pac,
        FinishRemoval { version: "1.0.0" },
        "LIVE",
        FinishReply::Live
    );
    let only = DetachStore {
        version: "1.0.0",
        ..detach
    };
    expect!(seen, pac, only, "ONLY", DetachStoreReply::Only);

    // RemOldPAC's detach: a newer running store, old members forced out.
    let r4 = join(
        gen(&pac).await,
        "R4",
        "t4",
        "3.0.0",
        Some(Mode::Upgrade),
        false,
    );
    expect!(
        seen,
        pac,
        Join {
            req: &r4,
            actor: "test"
        },
        "OK",
        JoinReply::Ok { .. }
    );
    expect!(seen, pac, set_running, "OK", SetModeReply::Ok { .. });
    expect!(
        seen,
        pac,
        forced,
        "OK",
        DetachOldReply::Ok { ref detached } if detached == &["1.0.0"]
    );

    // A restarted agent's clean-up.
    let clean = CleanRegion {
        region: "R1",
        host: "h-R1",
        actor: "test",
    };
    expect!(seen, pac, clean.clone(), "CLEANED", CleanReply::Cleaned);
    expect!(seen, pac, clean.clone(), "CLEAN", CleanReply::Clean);
    let other = CleanRegion {
        region: "R4",
        host: "h9",
        ..clean
    };
    expect!(seen, pac, other, "OTHER", CleanReply::Other { ref host } if host == "h-R4");

    // The consumer group every region reads through is the one the layout names.
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key("ds:jobs"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert!(format!("{:?}", groups[0]).contains(JOB_GROUP));
    seen
}

/// A script that changes one store (made by `call(fence, store)`): the change of 1.0.0,
/// then of a store that does not exist, then under a stale fence.
async fn expect_store_change<C: Call<Reply = StoreReply>>(
    seen: &mut BTreeSet<(&'static str, &'static str)>,
    pac: &Pac,
    epoch: u64,
    call: impl Fn(u64, &'static str) -> C,
) {
    expect!(seen, pac, call(epoch, "1.0.0"), "OK", StoreReply::Ok);
    expect!(
        seen,
        pac,
        call(epoch, "9.9.9"),
        "NOSTORE",
        StoreReply::NoStore
    );
    expect!(
        seen,
        pac,
        call(1, "1.0.0"),
        "FENCED",
        StoreReply::Fenced { .. }
    );
}

/// A detached store's keys are deleted even when the server has no script cached: the
/// pipelined batches load their script in the same round trip (EVALSHA alone would fail
/// with NOSCRIPT after a SCRIPT FLUSH or on a replica promoted without the script).
#[test]
fn remove_old_survives_a_script_flush() {
    let server = RedisServer::start();
    let mut raw = server.conn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let psor = Psor::connect(&PsorOptions::new(server.url()))
            .await
            .unwrap();
        let pac = Pac::new(psor, PacName::new(PAC).unwrap());
        pac.init(false, "test", None).await.unwrap();
        let old = join(
            gen(&pac).await,
            "R1",
            "t1",
            "1.0.0",
            Some(Mode::Running),
            true,
        );
        pac.join(&old, "test").await.unwrap();
        for i in 0..1200 {
            // Named in the store's key index, as every writer of a store key does.
            let k = key(&format!("store:1.0.0:k{i}"));
            let _: () = raw.set(&k, i).unwrap();
            let _: () = raw.rpush(key("store:1.0.0:index"), &k).unwrap();
        }
        pac.leave("R1", "t1", "stopped", "test").await.unwrap();
        let new = join(
            gen(&pac).await,
            "R2",
            "t2",
            "2.0.0",
            Some(Mode::Running),
            false,
        );
        pac.join(&new, "test").await.unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
        let r = pac.remove_old(false, "test", None).await.unwrap();
        assert_eq!(r.stores_removed, ["1.0.0"]);
        assert!(r.keys_removed >= 1200, "{r:?}");
    });
    let left: Vec<String> = raw.keys(key("store:1.0.0:*")).unwrap();
    assert!(left.is_empty(), "{left:?}");
    let removing: Vec<String> = raw.smembers(key("removing")).unwrap();
    assert!(removing.is_empty());
}
