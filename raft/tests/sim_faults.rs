//! Issue 21, simulator faults: the fault primitives themselves (a paused process, a clock that
//! runs at another rate, a message delivered twice, a link blocked one way) in the simulation
//! runtime and network the driver runs on, and in the core simulator; so that the chaos sweeps
//! that use them (`driver_sim.rs`, `simulator.rs`) test what they claim to.

use raftkv_raft::runtime::sim::{SimNet, SimRuntime};
use raftkv_raft::sim::{Sim, SimOptions};
use raftkv_raft::{Body, Message, Role, Runtime, Transport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Spawns a task in `group` that counts its 10 ms sleeps.
fn ticker(rt: &SimRuntime, group: u64) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let handle = rt.with_group(group);
    let sleeper = handle.clone();
    handle.spawn(async move {
        loop {
            sleeper.sleep(Duration::from_millis(10)).await;
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

#[test]
fn a_paused_group_is_not_polled_and_resumes_with_its_timers_late() {
    let rt = SimRuntime::new(1);
    let paused = ticker(&rt, 1);
    let running = ticker(&rt, 2);
    let main = rt.clone();
    let (p, r) = (paused.clone(), running.clone());
    let seen = rt
        .block_on(async move {
            main.sleep(Duration::from_millis(105)).await;
            main.pause_group(1);
            let at_pause = p.load(Ordering::SeqCst);
            main.sleep(Duration::from_millis(1_000)).await;
            let during = p.load(Ordering::SeqCst) - at_pause;
            let others = r.load(Ordering::SeqCst);
            assert!(main.is_paused(1));
            main.resume_group(1);
            // The timer that fired while paused runs at once, late; then it ticks again.
            main.sleep(Duration::from_millis(1)).await;
            let after_one_ms = p.load(Ordering::SeqCst) - at_pause;
            main.sleep(Duration::from_millis(100)).await;
            let after = p.load(Ordering::SeqCst) - at_pause;
            (at_pause, during, others, after_one_ms, after)
        })
        .expect("no deadlock");
    let (at_pause, during, others, after_one_ms, after) = seen;
    assert_eq!(at_pause, 10, "{seen:?}");
    assert_eq!(during, 0, "a paused group ran: {seen:?}");
    assert!(others >= 110, "the other group stopped too: {seen:?}");
    assert_eq!(
        after_one_ms, 1,
        "the late timer did not run on resume: {seen:?}"
    );
    assert_eq!(after, 11, "{seen:?}");
}

#[test]
fn a_skewed_clock_makes_a_groups_timers_fire_at_its_rate() {
    let rt = SimRuntime::new(2);
    rt.set_clock_per_mille(1, 1_100);
    rt.set_clock_per_mille(2, 900);
    let slow = ticker(&rt, 1);
    let fast = ticker(&rt, 2);
    let normal = ticker(&rt, 3);
    let main = rt.clone();
    rt.block_on(async move { main.sleep(Duration::from_millis(9_905)).await })
        .expect("no deadlock");
    // 9.9 s of 10 ms sleeps: 990 at the normal rate, 11 ms each (900) and 9 ms each (1,100).
    assert_eq!(normal.load(Ordering::SeqCst), 990);
    assert_eq!(slow.load(Ordering::SeqCst), 900);
    assert_eq!(fast.load(Ordering::SeqCst), 1_100);
}

fn heartbeat(from: u64, to: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    }
}

/// Sends `count` heartbeats each way between nodes 1 and 2 and returns how many each received.
fn exchange(net: &SimNet, rt: &SimRuntime, count: usize) -> (usize, usize) {
    let mut a = net.endpoint(1);
    let mut b = net.endpoint(2);
    for _ in 0..count {
        a.send(heartbeat(1, 2));
        b.send(heartbeat(2, 1));
    }
    let main = rt.clone();
    rt.block_on(async move {
        main.sleep(Duration::from_millis(100)).await;
        let mut got = (0, 0);
        for (ep, slot) in [(&mut a, &mut got.0), (&mut b, &mut got.1)] {
            loop {
                let next = futures::FutureExt::now_or_never(ep.recv());
                match next {
                    Some(Some(_)) => *slot += 1,
                    _ => break,
                }
            }
        }
        got
    })
    .expect("no deadlock")
}

#[test]
fn the_simulated_network_duplicates_messages() {
    let rt = SimRuntime::new(3);
    let net = SimNet::new(&rt);
    assert_eq!(exchange(&net, &rt, 10), (10, 10));
    net.set_duplicate_chance(1.0);
    assert_eq!(exchange(&net, &rt, 10), (20, 20));
}

#[test]
fn a_link_blocked_one_way_still_carries_the_other_way() {
    let rt = SimRuntime::new(4);
    let net = SimNet::new(&rt);
    net.block(1, 2);
    // (received by 1, received by 2): 1 → 2 is dropped, 2 → 1 flows.
    assert_eq!(exchange(&net, &rt, 10), (10, 0));
    net.unblock(1, 2);
    assert_eq!(exchange(&net, &rt, 10), (10, 10));
}

#[test]
fn core_sim_a_paused_leader_is_replaced_and_steps_down_when_it_resumes() {
    let mut sim = Sim::new(SimOptions::new(3, 5));
    sim.run_until(5_000, |s| s.leader().is_some())
        .expect("safe");
    let old = sim.leader().expect("a leader within 5 s");
    let old_term = sim.raft(old).expect("up").term();
    sim.pause(old, 3_000);
    assert!(sim.is_paused(old));
    // The others elect a new leader while the old one, paused, still believes it leads.
    sim.run_for(2_000).expect("safe");
    let new = sim.leader().expect("a new leader");
    assert_ne!(new, old);
    assert_eq!(sim.raft(old).expect("up").role(), Role::Leader);
    assert_eq!(sim.raft(old).expect("up").term(), old_term);
    // Proposals to a paused node are not taken.
    assert!(sim.propose(old, bytes::Bytes::from_static(b"x")).is_err());
    // Resumed, it handles what arrived meanwhile, late, and steps down.
    sim.run_for(1_500).expect("safe");
    assert!(!sim.is_paused(old));
    let r = sim.raft(old).expect("up");
    assert_eq!(r.role(), Role::Follower);
    assert!(r.term() > old_term);
}

#[test]
fn core_sim_a_slow_clock_ticks_less_often() {
    // One node alone: it elects itself after its election timeout, in its own ticks.
    let elected_at = |tick_ms: u64| {
        let mut sim = Sim::new(SimOptions::new(1, 6));
        sim.set_tick_ms(0, tick_ms);
        sim.run_until(60_000, |s| s.leader().is_some())
            .expect("safe");
        sim.now_ms()
    };
    let normal = elected_at(10);
    let slow = elected_at(20);
    assert!(
        slow > normal + normal / 2,
        "a clock at half rate elected at {slow} ms, the normal one at {normal} ms"
    );
}
