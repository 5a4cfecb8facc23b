//! Backend state: admin state (operator), health (probes) and weight
//! (config) kept apart, and the rule that turns them into which backends
//! the Maglev table holds.
//!
//! Health moves with hysteresis: `fall` consecutive failures take an up
//! backend down, `rise` consecutive passes bring a down one up. A backend
//! starts `unknown` and counts as up until its first probe, which settles it
//! at once (a dead backend at start is out after one timeout, not `fall`).

use serde::Serialize;

use crate::config::{AllDown, HealthCheck, OnDown};
pub use crate::pipeline::services::Admission;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What the operator asked for, independent of health and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    /// Takes new flows while healthy.
    Enabled,
    /// No new flows; existing flows finish.
    Draining,
    /// No new flows, existing flows expired, not probed.
    Disabled,
}

impl Admin {
    pub fn name(self) -> &'static str {
        match self {
            Admin::Enabled => "enabled",
            Admin::Draining => "draining",
            Admin::Disabled => "disabled",
        }
    }
}

/// Rise/fall hysteresis over probe results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checker {
    pub health: Health,
    passes: u8,
    fails: u8,
}

impl Default for Checker {
    fn default() -> Self {
        Checker { health: Health::Unknown, passes: 0, fails: 0 }
    }
}

impl Checker {
    /// A checker that is up for good (kind = "none").
    pub fn always_up() -> Checker {
        Checker { health: Health::Up, passes: 0, fails: 0 }
    }

    /// Records one probe result; returns the new health if it changed.
    pub fn record(&mut self, pass: bool, rise: u8, fall: u8) -> Option<Health> {
        let next = match (self.health, pass) {
            (Health::Unknown, true) => Some(Health::Up),
            (Health::Unknown, false) => Some(Health::Down),
            (Health::Up, true) | (Health::Down, false) => {
                (self.passes, self.fails) = (0, 0);
                None
            }
            (Health::Up, false) => {
                self.fails = self.fails.saturating_add(1);
                (self.fails >= fall).then_some(Health::Down)
            }
            (Health::Down, true) => {
                self.passes = self.passes.saturating_add(1);
                (self.passes >= rise).then_some(Health::Up)
            }
        };
        if let Some(h) = next {
            *self = Checker { health: h, passes: 0, fails: 0 };
        }
        next
    }
}

/// One backend's inputs to [`admit`].
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub admin: Admin,
    pub health: Health,
    pub weight: u32,
    /// Its next hop (MAC) is known; unresolved counts as down.
    pub resolved: bool,
}

/// Decides each backend's admission for one service. Returns the
/// admissions and whether the service is in panic mode (every candidate
/// down, spread over all of them anyway).
pub fn admit(check: &HealthCheck, backends: &[Inputs]) -> (Vec<Admission>, bool) {
    let candidate = |b: &Inputs| b.admin == Admin::Enabled && b.weight > 0;
    let healthy = |b: &Inputs| candidate(b) && b.health != Health::Down && b.resolved;
    let panic =
        check.all_down == AllDown::Panic && !backends.iter().any(healthy) && backends.iter().any(candidate);
    let out = backends
        .iter()
        .map(|b| {
            if b.admin == Admin::Disabled {
                Admission::Expire
            } else if healthy(b) || panic && candidate(b) {
                Admission::In
            } else if check.on_down == OnDown::Expire
                && b.admin == Admin::Enabled
                && !healthy(b)
                && b.weight > 0
            {
                Admission::Expire
            } else {
                Admission::Out
            }
        })
        .collect();
    (out, panic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hysteresis_needs_fall_failures_and_rise_passes() {
        let mut c = Checker::default();
        assert_eq!(c.record(true, 2, 3), Some(Health::Up), "first result settles unknown");
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), Some(Health::Down));
        assert_eq!(c.record(true, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), Some(Health::Up));
        let mut c = Checker::default();
        assert_eq!(c.record(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn a_flapping_backend_never_rises_when_passes_are_not_consecutive() {
        // A down one never rises with rise = 2, and an up one never falls
        // with fall = 2.
        for (first, stays) in [(false, Health::Down), (true, Health::Up)] {
            let mut c = Checker::default();
            c.record(first, 2, 2);
            for _ in 0..50 {
                assert_eq!(c.record(!first, 2, 2), None, "{stays:?}");
                assert_eq!(c.record(first, 2, 2), None, "{stays:?}");
            }
            assert_eq!(c.health, stays);
        }
    }

    fn check(all_down: AllDown, on_down: OnDown) -> HealthCheck {
        HealthCheck { all_down, on_down, ..HealthCheck::default_for(6) }
    }

    fn inputs(admin: Admin, health: Health, weight: u32) -> Inputs {
        Inputs { admin, health, weight, resolved: true }
    }

    #[test]
    fn admin_state_wins_over_health() {
        let c = check(AllDown::Panic, OnDown::Keep);
        let (a, panic) = admit(
            &c,
            &[
                inputs(Admin::Enabled, Health::Up, 100),
                inputs(Admin::Draining, Health::Up, 100),
                inputs(Admin::Disabled, Health::Up, 100),
                inputs(Admin::Enabled, Health::Down, 100),
                inputs(Admin::Enabled, Health::Unknown, 100),
                Inputs { resolved: false, ..inputs(Admin::Enabled, Health::Up, 100) },
            ],
        );
        use Admission::*;
        assert_eq!(a, [In, Out, Expire, Out, In, Out]);
        assert!(!panic);
    }

    #[test]
    fn all_down_panics_or_drops_as_configured() {
        let down = [inputs(Admin::Enabled, Health::Down, 100), inputs(Admin::Draining, Health::Down, 100)];
        let (a, panic) = admit(&check(AllDown::Panic, OnDown::Keep), &down);
        assert_eq!(a, [Admission::In, Admission::Out], "panic spreads over enabled backends only");
        assert!(panic);
        let (a, panic) = admit(&check(AllDown::Drop, OnDown::Expire), &down);
        assert_eq!(a, [Admission::Expire, Admission::Out]);
        assert!(!panic);
    }

    fn any_inputs() -> impl Strategy<Value = Inputs> {
        (0..3u8, 0..3u8, prop_oneof![Just(0u32), 1..200u32], any::<bool>()).prop_map(
            |(a, h, weight, resolved)| Inputs {
                admin: [Admin::Enabled, Admin::Draining, Admin::Disabled][usize::from(a)],
                health: [Health::Unknown, Health::Up, Health::Down][usize::from(h)],
                weight,
                resolved,
            },
        )
    }

    proptest! {
        #[test]
        fn admission_invariants(
            bs in proptest::collection::vec(any_inputs(), 0..12),
            panic_mode in any::<bool>(),
            expire in any::<bool>(),
        ) {
            let c = check(
                if panic_mode { AllDown::Panic } else { AllDown::Drop },
                if expire { OnDown::Expire } else { OnDown::Keep },
            );
            let (a, panic) = admit(&c, &bs);
            prop_assert_eq!(a.len(), bs.len());
            let healthy = |b: &Inputs| b.admin == Admin::Enabled && b.weight > 0
                && b.health != Health::Down && b.resolved;
            for (b, adm) in bs.iter().zip(&a) {
                // Never admitted: not enabled, or weight 0.
                if b.admin != Admin::Enabled || b.weight == 0 {
                    prop_assert_ne!(*adm, Admission::In);
                }
                // Disabled always loses its flows; draining never does.
                if b.admin == Admin::Disabled { prop_assert_eq!(*adm, Admission::Expire); }
                if b.admin == Admin::Draining { prop_assert_eq!(*adm, Admission::Out); }
                // With on_down = keep only disabled backends lose flows.
                if !expire && b.admin != Admin::Disabled { prop_assert_ne!(*adm, Admission::Expire); }
            }
            if bs.iter().any(healthy) {
                // Some healthy: exactly the healthy ones are in.
                prop_assert!(!panic);
                for (b, adm) in bs.iter().zip(&a) {
                    prop_assert_eq!(*adm == Admission::In, healthy(b));
                }
            } else if !panic_mode {
                prop_assert!(a.iter().all(|x| *x != Admission::In), "drop mode admits none");
            }
        }

        #[test]
        fn health_follows_the_last_rise_or_fall_results(
            results in proptest::collection::vec(any::<bool>(), 1..60),
            rise in 1..5u8,
            fall in 1..5u8,
        ) {
            let mut c = Checker::default();
            for r in &results {
                c.record(*r, rise, fall);
            }
            // The last `rise` results all passing means up; the last `fall`
            // all failing means down (when that many results exist after
            // the first, which settles unknown on its own).
            let n = results.len();
            if n > usize::from(rise) && results[n - usize::from(rise)..].iter().all(|&r| r) {
                prop_assert_eq!(c.health, Health::Up);
            }
            if n > usize::from(fall) && results[n - usize::from(fall)..].iter().all(|&r| !r) {
                prop_assert_eq!(c.health, Health::Down);
            }
            prop_assert_ne!(c.health, Health::Unknown);
        }
    }
}
