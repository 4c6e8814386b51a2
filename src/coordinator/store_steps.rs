//! The steps that act on the PAC's stores rather than on regions: the compatibility
//! check, mode changes and the removal of a store. Each observes the stores first and
//! does only what is missing.

use super::actions::{Ctx, StepOutcome};
use super::driver::Driver;
use super::probe::StoreMode;
use crate::compat;
use crate::error::{Error, Result};
use crate::names::Product;
use crate::psor::views::Stores;
use crate::psor::{Mode, Pac, StoreInfo};

/// The PAC's stores as the coordinator sees them, the one answer every read of them goes
/// through: a plan's `store_state` template when it has one (a vendor's PSOR holds none
/// of pacup's store records, and with `--state` the coordinator reads nothing of the
/// PSOR), else pacup's own records. `version` is the `{version}` the template gets.
pub(crate) async fn pac_stores(pac: &Pac, driver: &Driver, version: &str) -> Result<Stores> {
    let Some(seen) = driver.store_state(pac, version).await else {
        return pac.stores().await;
    };
    // The template tells version and mode only: the product it was built for is this
    // platform's, which is all the compatibility check compares beyond the version.
    let stores = seen?
        .into_iter()
        .map(|s| StoreInfo {
            version: s.version,
            running_version: String::new(),
            os: crate::names::default_os(),
            bitness: crate::names::default_bitness(),
            mode: match s.mode {
                StoreMode::Running => Mode::Running,
                StoreMode::Quiesce => Mode::Quiesce,
                StoreMode::Upgrade => Mode::Upgrade,
            },
            created_at_ms: 0,
            created_by: String::new(),
            members: Vec::new(),
            live_members: Vec::new(),
        })
        .collect();
    Ok(Stores {
        stores,
        ..Stores::default_present()
    })
}

/// `check_compat`: the target must still be incompatible with the running store.
pub(super) async fn check_compat(ctx: &Ctx<'_>) -> Result<StepOutcome> {
    let target = ctx.target();
    let stores = pac_stores(ctx.pac, ctx.driver, &target).await?;
    if stores.store(&target).is_some() {
        return Ok(StepOutcome::Skipped(format!(
            "store {target} exists already"
        )));
    }
    let compatible = |detail: &str| {
        Error::refused(format!(
            "target {target} is compatible with the running store; the incompatible process \
             does not apply{detail}"
        ))
    };
    // `{host}`: the first upgraded host, which has the new product by now.
    let first_host = ctx.plan.waves[0][0].to_string();
    if let Some(r) = ctx
        .driver
        .check_compat(ctx.pac, &first_host, &target, ctx.epoch)
        .await
    {
        let (code, detail) = r?;
        return match code {
            3 => Ok(StepOutcome::Done(format!("incompatible: {detail}"))),
            0 => Err(compatible(&format!(" ({detail})"))),
            _ => Err(Error::refused(format!("check_compat failed: {detail}"))),
        };
    }
    let base = stores
        .newest_running()
        .and_then(|s| s.product())
        .ok_or_else(|| Error::refused(format!("PAC {} has no running store", ctx.pac.name())))?;
    let product = Product {
        version: ctx.plan.target.version.clone(),
        os: base.os.clone(),
        bitness: base.bitness,
    };
    let v = compat::check(&product, &base, None);
    if v.compatible {
        return Err(compatible(""));
    }
    Ok(StepOutcome::Done(v.reasons.join("; ")))
}

/// `set_mode_running` / `set_mode_quiesce`: skipped when there is nothing to change.
pub(super) async fn set_mode(ctx: &Ctx<'_>, mode: Mode) -> Result<StepOutcome> {
    let target = ctx.target();
    let s = pac_stores(ctx.pac, ctx.driver, &target).await?;
    let nothing = match mode {
        Mode::Running => s.store(&target).is_some_and(|s| s.mode == Mode::Running),
        _ => {
            let n = s.stores.len();
            n < 2 || s.stores[..n - 1].iter().all(|s| s.mode != Mode::Running)
        }
    };
    if nothing {
        return Ok(StepOutcome::Skipped(format!("nothing to set {mode}")));
    }
    let m = ctx
        .driver
        .set_mode(ctx.pac, mode, &target, ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// Rollback's `set_mode_running`: the old store takes batch work again.
pub(super) async fn unquiesce(ctx: &Ctx<'_>, store: &str) -> Result<StepOutcome> {
    let s = pac_stores(ctx.pac, ctx.driver, &ctx.target()).await?;
    match s.store(store) {
        None => Err(Error::refused(format!(
            "the old store {store} is gone (remove_old ran); the rollout cannot be rolled back"
        ))),
        Some(st) if st.mode == Mode::Running => Ok(StepOutcome::Skipped(format!(
            "store {store} already running"
        ))),
        Some(_) => {
            ctx.pac.unquiesce(store, ctx.actor, ctx.epoch).await?;
            Ok(StepOutcome::Done(format!("store {store} running")))
        }
    }
}

/// `remove_old`: deletes the old store (incremental, idempotent).
pub(super) async fn remove_old(ctx: &Ctx<'_>) -> Result<StepOutcome> {
    let s = pac_stores(ctx.pac, ctx.driver, &ctx.target()).await?;
    if s.stores.len() < 2 && s.removing.is_empty() {
        return Ok(StepOutcome::Skipped("no old store left".into()));
    }
    let m = ctx
        .driver
        .remove_old(ctx.pac, &ctx.target(), ctx.epoch, ctx.actor)
        .await?;
    Ok(StepOutcome::Done(m))
}

/// Rollback's `remove_old`: deletes the new store (refused while it has live members).
pub(super) async fn remove_store(ctx: &Ctx<'_>, store: &str) -> Result<StepOutcome> {
    let s = pac_stores(ctx.pac, ctx.driver, &ctx.target()).await?;
    if s.store(store).is_none() && !s.removing.iter().any(|v| v == store) {
        return Ok(StepOutcome::Skipped(format!("store {store} already gone")));
    }
    let k = ctx.pac.remove_store(store, ctx.actor, ctx.epoch).await?;
    Ok(StepOutcome::Done(format!(
        "store {store} deleted ({k} keys)"
    )))
}
