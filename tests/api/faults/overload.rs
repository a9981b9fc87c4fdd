//! Overload, sized from the capacity measured first (a debug build on a
//! small shared machine has no fixed capacity): closed-loop clients at
//! rising concurrency find where goodput stops growing (saturation); then
//! slices at that concurrency (the baseline) alternate with slices of a
//! flood offering about five times the capacity, so both see the same
//! background load. Each slice starts its clients at once; goodput is
//! measured after the first [`ONSET`] of each slice (the steady state of a
//! sustained flood, not the synchronized first wave a slice starts with),
//! while every answer, the onset's included, is checked for its code. Under the flood refusals are UNAVAILABLE or
//! RESOURCE_EXHAUSTED and never INTERNAL or UNKNOWN, and a second tenant's
//! calls during one tenant's flood succeed at least 95 % of the time, a
//! call answered from memory (WhoAmI) keeps succeeding while database-bound
//! calls are shed, and the flood's goodput, over all its slices, stays at
//! 90 % of the baseline's or more (issue 13).
//!
//! The clients behave as the SDKs do (`tenantry::client::retry`): a refused
//! call is retried after the RetryInfo delay the server sent, plus jitter.

use std::time::{Duration, Instant};

use tenantry::{
    client::retry::RetryPolicy,
    proto::tenantry::v1::{ListUsersRequest, WhoAmIRequest, auth_service_client::AuthServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

use super::{Tally, server_errors};
use crate::harness::{
    TestApp,
    tenants::{TenantHandle, upsert_plan},
};

/// How long each calibration level runs.
const LEVEL: Duration = Duration::from_secs(1);
/// The baseline and the flood alternate in slices this long, so both see
/// the same background load on a shared machine.
const SLICE: Duration = Duration::from_secs(3);
/// Baseline and flood slices, each.
const ROUNDS: usize = 7;
/// The start of each slice, left out of its goodput (every answer in it is
/// still checked): the clients' synchronized first wave, and the windows
/// the pushback takes to settle on it.
const ONSET: Duration = Duration::from_secs(1);
/// How long the fairness phase runs.
const FLOOD: Duration = Duration::from_secs(3);
/// The RetryInfo delay the server sends with a shed call.
const SHED_RETRY: Duration = Duration::from_millis(200);

/// What a set of clients got in one phase.
#[derive(Default)]
struct Phase {
    tally: Tally,
    /// Answers during the onset, not in `tally`.
    onset: Tally,
    ok_latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Phase {
    fn goodput(&self) -> f64 {
        self.tally.count(Code::Ok) as f64 / self.elapsed.as_secs_f64()
    }

    fn ok_ratio(&self) -> f64 {
        self.tally.count(Code::Ok) as f64 / self.tally.total().max(1) as f64
    }

    fn p99(&mut self) -> Duration {
        self.ok_latencies.sort();
        let at = (self.ok_latencies.len() * 99 / 100).min(self.ok_latencies.len().saturating_sub(1));
        self.ok_latencies.get(at).copied().unwrap_or_default()
    }

    /// Adds a later slice of the same phase.
    /// Every answer, the onset's included.
    fn all(&self) -> Tally {
        let mut all = Tally::default();
        all.merge(&self.tally);
        all.merge(&self.onset);
        all
    }

    fn extend(&mut self, other: Phase) {
        self.tally.merge(&other.tally);
        self.onset.merge(&other.onset);
        self.ok_latencies.extend(other.ok_latencies);
        self.elapsed += other.elapsed;
    }

    fn absorb(&mut self, other: Phase) {
        self.tally.merge(&other.tally);
        self.onset.merge(&other.onset);
        self.ok_latencies.extend(other.ok_latencies);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_cleanly_and_leaves_another_tenant_its_share() {
    let app = TestApp::builder().configure(|c| c.no_workers = true).spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "faults-roomy", 1_000_000, 1_000_000, 0).await;
    let flooder = app.create_tenant_on("flooder", "faults-roomy").await;
    let bystander = app.create_tenant_on("bystander", "faults-roomy").await;
    // Warm up: connections, caches, the method's latency estimate.
    run(&app.channel, &flooder, 4, Duration::from_millis(500), Duration::ZERO).await;

    let mut best = (0.0_f64, 1_usize);
    let mut previous = 0.0;
    for workers in [1, 2, 4, 8, 16, 32] {
        let mut phase = run(&app.channel, &flooder, workers, LEVEL, Duration::ZERO).await;
        let goodput = phase.goodput();
        eprintln!(
            "calibration: {workers} clients: {goodput:.0} OK/s, p99 {} ms, {:?}",
            phase.p99().as_millis(),
            phase.tally
        );
        assert_clean(&phase.tally, "calibration");
        if goodput > best.0 {
            best = (goodput, workers);
        }
        if goodput < previous * 1.05 {
            break; // saturated: more clients no longer add goodput
        }
        previous = goodput;
    }
    let (_, saturation) = best;
    // Offered load relative to capacity: the clients that saturate it, plus
    // enough clients retrying after each refusal's delay to offer about four
    // times the best goodput again.
    let flood_clients = saturation + (4.0 * best.0 * SHED_RETRY.as_secs_f64()).ceil() as usize;

    let (mut baseline, mut flood) = (Phase::default(), Phase::default());
    let mut ratios = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let calm = run(&app.channel, &flooder, saturation, SLICE, ONSET).await;
        let flooded = run(&app.channel, &flooder, flood_clients, SLICE, ONSET).await;
        ratios.push(flooded.goodput() / calm.goodput().max(1.0));
        baseline.extend(calm);
        flood.extend(flooded);
    }
    let (best_goodput, goodput) = (baseline.goodput(), flood.goodput());
    eprintln!(
        "baseline: {saturation} clients: {best_goodput:.0} OK/s, p99 {} ms, {:?}",
        baseline.p99().as_millis(),
        baseline.tally
    );
    eprintln!(
        "flood: {flood_clients} clients: {goodput:.0} OK/s ({:.0} % of the baseline), p99 {} ms, {:?}; onsets {:?}",
        100.0 * goodput / best_goodput,
        flood.p99().as_millis(),
        flood.tally,
        flood.onset
    );
    assert_clean(&baseline.all(), "baseline");
    assert_clean(&flood.all(), "flood");
    assert!(
        flood.tally.count(Code::Unavailable) + flood.tally.count(Code::ResourceExhausted) > 0,
        "the flood was shed"
    );
    // Goodput under the flood against the baseline, over all the slices of
    // each (they alternate, so both saw the same machine on average), held
    // to issue 13's 90 %. With calls over the limit waiting for a slot
    // handed over in order and 3 s slices measured after their first second
    // (2026-12-03), runs alone came to 98–103 %, single rounds 95–110 %.
    // With 2 s slices measured after 500 ms, the pushback had not settled
    // when a slice was measured: 88–99 % (before the wait: 94–131 %, rounds
    // 73–151 %, so this asserted 80 %; docs/reliability.md).
    let ratio = goodput / best_goodput.max(1.0);
    ratios.sort_by(f64::total_cmp);
    let percents: Vec<String> = ratios.iter().map(|r| format!("{:.0} %", 100.0 * r)).collect();
    eprintln!("goodput under the flood: {:.0} % of the baseline (target 90 %); per round {percents:?}", 100.0 * ratio);
    assert!(ratio >= 0.9, "goodput under the flood fell to {:.0} % (rounds {percents:?})", 100.0 * ratio);

    let (flood, mut quiet, from_memory) = tokio::join!(
        run(&app.channel, &flooder, flood_clients, FLOOD, Duration::ZERO),
        run(&app.channel, &bystander, 2, FLOOD, Duration::ZERO),
        who_am_i(&app.channel, &flooder, FLOOD)
    );
    let quiet_p99 = quiet.p99();
    eprintln!(
        "fairness: flooder {:?}; bystander {:?} ({:.1} % OK, p99 {} ms)",
        flood.tally,
        quiet.tally,
        100.0 * quiet.ok_ratio(),
        quiet_p99.as_millis()
    );
    assert_clean(&flood.tally, "flood beside a bystander");
    assert_clean(&quiet.tally, "bystander");
    assert!(quiet.tally.total() >= 20, "the bystander made calls: {:?}", quiet.tally);
    assert!(quiet.ok_ratio() >= 0.95, "the bystander's calls during another's flood: {:?}", quiet.tally);
    // WhoAmI needs no database (the key and the tenant are cached), so it is
    // never gated: the flooding tenant itself still gets it while its
    // database-bound calls are shed.
    eprintln!("WhoAmI during the flood: {from_memory:?}");
    assert!(from_memory.total() >= 20, "WhoAmI was called: {from_memory:?}");
    assert_eq!(from_memory.count(Code::Ok), from_memory.total(), "calls served from memory are not shed");

    let errors = server_errors(&app).await;
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Refusals are UNAVAILABLE or RESOURCE_EXHAUSTED; nothing else fails.
fn assert_clean(tally: &Tally, phase: &str) {
    assert_eq!(tally.count(Code::Internal), 0, "{phase}: {tally:?}");
    assert_eq!(tally.count(Code::Unknown), 0, "{phase}: {tally:?}");
    let expected = tally.count(Code::Ok) + tally.count(Code::Unavailable) + tally.count(Code::ResourceExhausted);
    assert_eq!(expected, tally.total(), "{phase}: only OK and shed answers: {tally:?}");
}

/// `workers` closed-loop clients calling ListUsers in `tenant` for `length`.
/// `workers` closed-loop clients for `length`; answers in the first `onset`
/// go to the phase's onset tally.
async fn run(channel: &Channel, tenant: &TenantHandle, workers: usize, length: Duration, onset: Duration) -> Phase {
    let until = Instant::now() + length;
    let started = Instant::now();
    let steady = started + onset;
    let clients: Vec<_> = (0..workers)
        .map(|_| {
            let (channel, tenant) = (channel.clone(), tenant.clone());
            tokio::spawn(async move {
                let mut client = AuthServiceClient::new(channel);
                let policy = RetryPolicy::default();
                let mut attempt = 0;
                let mut phase = Phase::default();
                while Instant::now() < until {
                    let mut request = tenant.as_admin(ListUsersRequest { page_size: 5, ..Default::default() });
                    request.set_timeout(Duration::from_secs(5));
                    let call = Instant::now();
                    let result = client.list_users(request).await;
                    let in_onset = Instant::now() < steady;
                    let tally = if in_onset { &mut phase.onset } else { &mut phase.tally };
                    tally.add(result.as_ref().map_or_else(|status| status.code(), |_| Code::Ok));
                    match result {
                        Ok(_) => {
                            attempt = 0;
                            if !in_onset {
                                phase.ok_latencies.push(call.elapsed());
                            }
                        }
                        Err(status) => {
                            attempt += 1;
                            let asked = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
                            // Retries exhausted, the application calls again
                            // later: still after the delay the server asked for.
                            let delay =
                                policy.delay(status.code(), asked, attempt).unwrap_or(asked.unwrap_or(SHED_RETRY));
                            tokio::time::sleep(delay.min(until.saturating_duration_since(Instant::now()))).await;
                        }
                    }
                }
                phase
            })
        })
        .collect();
    let mut phase = Phase::default();
    for client in clients {
        phase.absorb(client.await.expect("client"));
    }
    phase.elapsed = started.elapsed().saturating_sub(onset);
    phase
}

/// One client calling WhoAmI in `tenant` in a closed loop for `length`.
async fn who_am_i(channel: &Channel, tenant: &TenantHandle, length: Duration) -> Tally {
    let until = Instant::now() + length;
    let mut client = AuthServiceClient::new(channel.clone());
    let mut tally = Tally::default();
    while Instant::now() < until {
        let mut request = tenant.as_admin(WhoAmIRequest {});
        request.set_timeout(Duration::from_secs(5));
        tally.add(client.who_am_i(request).await.map_or_else(|status| status.code(), |_| Code::Ok));
    }
    tally
}
