//! The start-type rules (docs/PSOR.md section 4) as a pure function of a snapshot.
//!
//! A refusal says what is in the way; when another start type would work, it carries
//! that as [`Advice`], which the command line phrases with its own flags.

use crate::compat::{self, Matrix};
use crate::error::{Advice, Error, Result};
use crate::names::Product;
use crate::psor::{Mode, Snapshot, StartType, StoreInfo};

/// What a start will do, decided from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartDecision {
    /// The start type actually performed.
    pub effective: StartType,
    /// Reset the PAC first (cold start with no other live region).
    pub reset_first: bool,
    /// Create the store (else join it).
    pub create: bool,
    /// Store version.
    pub store: String,
    /// Mode of a created store.
    pub mode: Mode,
    /// Warning to show (cold start turned warm).
    pub warning: Option<String>,
}

fn compat_with(
    product: &Product,
    s: &StoreInfo,
    matrix: Option<&Matrix>,
) -> Option<compat::Verdict> {
    s.product().map(|sp| compat::check(product, &sp, matrix))
}

/// Applies the start-type rules (docs/PSOR.md section 4) to a snapshot.
pub fn decide_start(
    snap: &Snapshot,
    pac: &str,
    region: &str,
    product: &Product,
    requested: StartType,
    matrix: Option<&Matrix>,
) -> Result<StartDecision> {
    let version = product.version.to_string();
    match requested {
        StartType::Cold => {
            if snap.live_regions_except(region).next().is_some() {
                let mut d = decide_start(snap, pac, region, product, StartType::Warm, matrix)?;
                d.warning = Some(format!(
                    "Region {region} initializing in Warm startup mode because PAC {pac} is already active"
                ));
                return Ok(d);
            }
            Ok(StartDecision {
                effective: StartType::Cold,
                reset_first: true,
                create: true,
                store: version,
                mode: Mode::Running,
                warning: None,
            })
        }
        StartType::Warm => {
            if !snap.exists || snap.stores.is_empty() {
                return Err(Error::refused_with(
                    format!("PAC {pac} has no store to join; cold start a region first"),
                    Advice::StartType {
                        start_type: StartType::Cold,
                    },
                ));
            }
            // The upgrade-mode store first, then running stores newest first: during a
            // rollback both stores run and an old-version region rejoins the old one.
            let candidates = snap
                .upgrade_store()
                .into_iter()
                .chain(snap.stores.iter().rev().filter(|s| s.mode == Mode::Running));
            let mut tried = Vec::new();
            for s in candidates {
                if let Some(v) = compat_with(product, s, matrix) {
                    if v.compatible {
                        return Ok(StartDecision {
                            effective: StartType::Warm,
                            reset_first: false,
                            create: false,
                            store: s.version.clone(),
                            mode: s.mode,
                            warning: None,
                        });
                    }
                    tried.push(format!("{} ({})", s.version, s.mode));
                }
            }
            let newer = snap
                .newest()
                .and_then(|s| semver::Version::parse(&s.version).ok())
                .is_none_or(|n| product.version > n);
            let message = format!(
                "region {region} at {product} is not compatible with store {} of PAC {pac}",
                if tried.is_empty() {
                    "(none running)".to_string()
                } else {
                    tried.join(" or ")
                },
            );
            Err(if newer {
                Error::refused_with(
                    message,
                    Advice::StartType {
                        start_type: StartType::Upgrade,
                    },
                )
            } else {
                Error::refused(format!(
                    "{message}; install a version compatible with the running store"
                ))
            })
        }
        StartType::Upgrade => {
            if !snap.exists || snap.stores.is_empty() {
                return Err(Error::refused_with(
                    format!("PAC {pac} has no store to upgrade from; cold start a region first"),
                    Advice::StartType {
                        start_type: StartType::Cold,
                    },
                ));
            }
            let Some(running) = snap.newest_running() else {
                return Err(Error::refused(format!(
                    "PAC {pac} has no running store to upgrade from"
                )));
            };
            if compat_with(product, running, matrix).is_some_and(|v| v.compatible) {
                return Err(Error::refused_with(
                    format!(
                        "region {region} at {product} is compatible with running store {} of \
                         PAC {pac}; an upgrade start is for incompatible versions",
                        running.version
                    ),
                    Advice::StartType {
                        start_type: StartType::Warm,
                    },
                ));
            }
            if let Some(u) = snap.upgrade_store() {
                if u.version == version {
                    return Ok(StartDecision {
                        effective: StartType::Upgrade,
                        reset_first: false,
                        create: false,
                        store: u.version.clone(),
                        mode: Mode::Upgrade,
                        warning: None,
                    });
                }
                return Err(Error::refused(format!(
                    "PAC {pac} already has store {} in upgrade mode; a region at {version} cannot \
                     start another upgrade beside it",
                    u.version
                )));
            }
            if let Some(s) = snap.store(&version) {
                return Err(Error::refused_with(
                    format!(
                        "PAC {pac} already has a store for {version} in mode {}",
                        s.mode
                    ),
                    Advice::StartType {
                        start_type: StartType::Warm,
                    },
                ));
            }
            if let Some(newest) = snap
                .newest()
                .and_then(|s| semver::Version::parse(&s.version).ok())
            {
                if product.version <= newest {
                    return Err(Error::refused_with(
                        format!(
                            "an upgrade start needs a version newer than the newest store \
                             {newest} of PAC {pac}; {version} is not"
                        ),
                        Advice::Rollback {
                            pac: pac.to_string(),
                        },
                    ));
                }
            }
            Ok(StartDecision {
                effective: StartType::Upgrade,
                reset_first: false,
                create: true,
                store: version,
                mode: Mode::Upgrade,
                warning: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(v: &str) -> Product {
        Product {
            version: semver::Version::parse(v).unwrap(),
            os: "linux-6".into(),
            bitness: 64,
        }
    }

    fn store(v: &str, mode: Mode) -> StoreInfo {
        StoreInfo {
            version: v.into(),
            running_version: String::new(),
            os: "linux-6".into(),
            bitness: 64,
            mode,
            created_at_ms: 0,
            created_by: "R".into(),
            members: vec![],
            live_members: vec![],
        }
    }

    fn snap(stores: Vec<StoreInfo>, alive: &[&str]) -> Snapshot {
        Snapshot {
            pac: "MyPAC".into(),
            exists: true,
            gen: 7,
            epoch: 0,
            created_at_ms: 0,
            resetting_since_ms: None,
            stores,
            regions: alive
                .iter()
                .map(|n| crate::psor::RegionInfo {
                    name: n.to_string(),
                    host: "h".into(),
                    product_version: "1.0.0".into(),
                    os: "linux-6".into(),
                    bitness: 64,
                    store: "1.0.0".into(),
                    state: "active".into(),
                    start_type: "cold".into(),
                    listener: "off".into(),
                    endpoint: String::new(),
                    clients: 0,
                    jobs_done: 0,
                    alive: true,
                    heartbeat_age_ms: Some(0),
                    liveness: Default::default(),
                })
                .collect(),
            hosts: vec![],
            removing: vec![],
        }
    }

    fn decide(s: &Snapshot, v: &str, t: StartType) -> Result<StartDecision> {
        decide_start(s, "MyPAC", "R9", &product(v), t, None)
    }

    #[test]
    fn cold_alone_resets_and_creates_running() {
        let d = decide(
            &snap(vec![store("1.0.0", Mode::Running)], &[]),
            "1.0.0",
            StartType::Cold,
        )
        .unwrap();
        assert!(d.reset_first && d.create);
        assert_eq!((d.effective, d.mode), (StartType::Cold, Mode::Running));
    }

    #[test]
    fn cold_with_live_region_becomes_warm_with_warning() {
        let d = decide(
            &snap(vec![store("1.0.0", Mode::Running)], &["R1"]),
            "1.0.1",
            StartType::Cold,
        )
        .unwrap();
        assert_eq!(d.effective, StartType::Warm);
        assert!(!d.reset_first);
        assert_eq!(
            d.warning.as_deref(),
            Some("Region R9 initializing in Warm startup mode because PAC MyPAC is already active")
        );
    }

    #[test]
    fn warm_prefers_compatible_upgrade_store_then_running() {
        let s = snap(
            vec![store("1.0.0", Mode::Running), store("2.0.0", Mode::Upgrade)],
            &[],
        );
        assert_eq!(decide(&s, "2.0.1", StartType::Warm).unwrap().store, "2.0.0");
        assert_eq!(decide(&s, "1.0.3", StartType::Warm).unwrap().store, "1.0.0");
        let e = decide(&s, "3.0.0", StartType::Warm).unwrap_err();
        assert_eq!(
            e.advice(),
            Some(&Advice::StartType {
                start_type: StartType::Upgrade
            }),
            "{e}"
        );
        assert_eq!(e.exit_code().code(), 1);
    }

    #[test]
    fn warm_without_store_is_refused() {
        assert!(decide(&snap(vec![], &[]), "1.0.0", StartType::Warm).is_err());
    }

    #[test]
    fn upgrade_rules() {
        let running = snap(vec![store("1.0.0", Mode::Running)], &["R1"]);
        let e = decide(&running, "0.9.0", StartType::Upgrade).unwrap_err();
        assert!(e.to_string().contains("newer than the newest store"), "{e}");
        assert!(matches!(e.advice(), Some(Advice::Rollback { .. })), "{e}");
        let e = decide(&running, "1.0.2", StartType::Upgrade).unwrap_err();
        assert!(e.to_string().contains("incompatible versions"), "{e}");
        assert_eq!(
            e.advice(),
            Some(&Advice::StartType {
                start_type: StartType::Warm
            })
        );
        let d = decide(&running, "2.0.0", StartType::Upgrade).unwrap();
        assert!(d.create && !d.reset_first);
        assert_eq!((d.store.as_str(), d.mode), ("2.0.0", Mode::Upgrade));

        let with_upgrade = snap(
            vec![store("1.0.0", Mode::Running), store("2.0.0", Mode::Upgrade)],
            &[],
        );
        let d = decide(&with_upgrade, "2.0.0", StartType::Upgrade).unwrap();
        assert!(!d.create);
        assert!(decide(&with_upgrade, "3.0.0", StartType::Upgrade).is_err());
    }
}
