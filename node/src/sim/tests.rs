use super::*;
use raftkv_checker::{CheckOptions, Verdict};

/// A script of faults and Clerk calls; the history's and the trace's JSON at its end.
fn scripted(seed: u64) -> (String, String) {
    let mut sim = SimCluster::start(SimConfig::new(3, seed)).unwrap();
    let history = History::new();
    let leader = sim.wait_leader(Duration::from_secs(5)).unwrap();
    let mut ck = sim.clerk(ClerkConfig::default(), Some(&history)).unwrap();
    for k in 0..5 {
        let (back, r) = sim
            .run_clerk(ck, move |mut ck| async move {
                let r = ck.put(format!("k{k}"), "v", None).await;
                (ck, r)
            })
            .unwrap();
        ck = back;
        r.unwrap();
    }
    sim.crash(leader).unwrap();
    sim.isolate((leader + 1) % 3).unwrap();
    sim.run_for(Duration::from_millis(700)).unwrap();
    sim.heal().unwrap();
    sim.restart(leader).unwrap();
    sim.set_unreliable(0.2, (1, 30), true).unwrap();
    let (_, r) = sim
        .run_clerk(ck, |mut ck| async move {
            let r = ck.append("k1", "w").await;
            (ck, r)
        })
        .unwrap();
    r.unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    (history.to_json(), sim.trace().to_json())
}

#[test]
fn the_same_seed_and_script_give_byte_identical_history_and_trace() {
    let a = scripted(7);
    let b = scripted(7);
    assert_eq!(a.0, b.0, "history");
    assert_eq!(a.1, b.1, "trace");
    let c = scripted(8);
    assert_ne!(a.1, c.1, "another seed, another run");
    let trace = ClusterTrace::from_json(&a.1).unwrap();
    let has = |f: &dyn Fn(&EventKind) -> bool| trace.events.iter().any(|e| f(&e.kind));
    assert!(has(&|k| matches!(k, EventKind::Crash)));
    assert!(has(&|k| matches!(k, EventKind::Partition { .. })));
    assert!(
        has(&|k| matches!(k, EventKind::Drop { .. })),
        "partition drops traced"
    );
    assert!(has(&|k| matches!(k, EventKind::Commit { .. })));
}

#[test]
fn a_workload_under_random_faults_stays_linearizable_and_replays() {
    let run = |seed| {
        let mut sim = SimCluster::start(SimConfig::new(3, seed)).unwrap();
        let history = History::new();
        let w = Workload {
            duration: Duration::from_secs(20),
            clients: 4,
            keys: 3,
            faults: true,
            clerk_timeout: Duration::from_secs(3),
        };
        let report = sim.run_workload(&w, &history).unwrap();
        (report, history, sim.trace().to_json())
    };
    let (report, history, trace) = run(3);
    assert!(report.faults.len() >= 5, "{report:?}");
    assert!(report.ok > 100, "{report:?}");
    assert_eq!(
        report.ok + report.failed,
        history.len() as u64,
        "every operation counted"
    );
    let result = history.check(&CheckOptions::default());
    assert_eq!(result.verdict, Verdict::Ok, "{}", history.to_json());
    let (again, history2, trace2) = run(3);
    assert_eq!(report, again);
    assert_eq!(history.to_json(), history2.to_json());
    assert_eq!(trace, trace2);
}

#[test]
fn bad_calls_are_typed_errors() {
    assert!(matches!(
        SimCluster::start(SimConfig::new(0, 1)),
        Err(ClusterError::Size { nodes: 0 })
    ));
    let mut sim = SimCluster::start(SimConfig::new(3, 1)).unwrap();
    assert!(matches!(
        sim.crash(3),
        Err(ClusterError::NoSuchNode { index: 3, .. })
    ));
    assert!(matches!(
        sim.restart(0),
        Err(ClusterError::Running { index: 0 })
    ));
    sim.crash(0).unwrap();
    assert!(matches!(
        sim.status(0),
        Err(ClusterError::NotRunning { index: 0 })
    ));
    assert!(matches!(
        sim.set_unreliable(1.5, (0, 1), true),
        Err(ClusterError::Setting(_))
    ));
    assert!(matches!(
        sim.run_for(SIM_RUN_MAX + Duration::from_secs(1)),
        Err(ClusterError::Setting(_))
    ));
    sim.close();
    assert!(matches!(sim.leader(), Err(ClusterError::Deadlock)));
}

#[test]
fn a_paused_leader_is_replaced_and_catches_up_once_resumed() {
    let mut sim = SimCluster::start(SimConfig::new(3, 5)).unwrap();
    let leader = sim.wait_leader(Duration::from_secs(5)).unwrap();
    sim.pause(leader).unwrap();
    assert!(sim.is_paused(leader));
    assert!(matches!(
        sim.status(leader),
        Err(ClusterError::Paused { index }) if index == leader
    ));
    let other = sim.wait_leader(Duration::from_secs(5)).unwrap();
    assert_ne!(other, leader);
    let ck = sim.clerk(ClerkConfig::default(), None).unwrap();
    let (_, r) = sim
        .run_clerk(ck, |mut ck| async move {
            let r = ck.put("k", "v", None).await;
            (ck, r)
        })
        .unwrap();
    assert_eq!(r, Ok(1));
    sim.resume(leader).unwrap();
    // One way: the old leader hears the others, they do not hear it.
    let third = (0..3).find(|&i| i != leader && i != other).unwrap();
    sim.block(leader, other).unwrap();
    sim.block(leader, third).unwrap();
    sim.run_for(Duration::from_secs(2)).unwrap();
    let s = sim.status(leader).unwrap();
    assert!(s.applied_index >= 2, "caught up: {s:?}");
    sim.unblock(leader, other).unwrap();
    let trace = sim.trace();
    let kinds: Vec<_> = trace.events.iter().map(|e| &e.kind).collect();
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Pause)));
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Resume)));
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Block { .. })));
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Drop { .. })));
}
