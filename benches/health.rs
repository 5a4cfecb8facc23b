//! Probe cost: CPU time the prober thread spends on one round of 1,000 TCP
//! health probes against loopback listeners. Probing 1,000 backends every
//! second costs (this time / 1 s) of one core; the target is under 5%.
//!
//! criterion reports thread CPU time (CLOCK_THREAD_CPUTIME_ID, user + system)
//! per round, not wall time: the round itself mostly waits in epoll.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use shunt::config::{CheckKind, HealthCheck};
use shunt::control::health::probe::{Engine, Target};

const BACKENDS: usize = 1000;
const LISTENERS: usize = 10;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn probe_round(c: &mut Criterion) {
    // Listeners whose threads accept and drop: the accept queues never fill.
    let addrs: Vec<_> = (0..LISTENERS)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            std::thread::spawn(move || {
                for c in l.incoming() {
                    drop(c);
                }
            });
            a
        })
        .collect();
    let check = Arc::new(HealthCheck {
        kind: CheckKind::Tcp,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        ..HealthCheck::default_for(6)
    });
    let targets: Vec<Target> =
        (0..BACKENDS).map(|i| Target { addr: addrs[i % LISTENERS], check: check.clone() }).collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut engine = Engine::new(tx).unwrap();
    let mut epoch = 0;
    let mut g = c.benchmark_group("health");
    g.sample_size(20);
    g.bench_function("probe_round_1000_tcp_cpu", |b| {
        b.iter_custom(|iters| {
            let mut cpu = Duration::ZERO;
            for _ in 0..iters {
                epoch += 1;
                let t0 = thread_cpu();
                engine.set_targets(epoch, targets.clone());
                let mut results = 0;
                let mut passed = 0;
                while results < BACKENDS {
                    engine.step(Duration::from_millis(20));
                    for o in rx.try_iter() {
                        results += 1;
                        passed += usize::from(o.pass);
                    }
                }
                cpu += thread_cpu() - t0;
                assert_eq!(passed, BACKENDS, "every probe of a live listener passes");
            }
            cpu
        })
    });
    g.finish();
}

criterion_group!(benches, probe_round);
criterion_main!(benches);
