//! Wheel tests: unit cases, and a property test against a naive model (a sorted list).

use super::*;
use proptest::prelude::*;

fn at(t: u64) -> Instant {
    Instant::from_ticks(t)
}

fn drain(wheel: &mut ArrayWheel<u32, 64>, now: u64) -> Vec<(TimerId, u32)> {
    let mut fired = Vec::new();
    wheel.poll(at(now), |id, p| fired.push((id, p)));
    fired
}

#[test]
fn fires_at_deadline_not_before() {
    let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_array();
    let id = wheel.insert(at(100), 1).unwrap();
    assert!(drain(&mut wheel, 99).is_empty());
    assert_eq!(wheel.elapsed(), at(99));
    assert_eq!(drain(&mut wheel, 100), [(id, 1)]);
    assert!(wheel.is_empty());
}

#[test]
fn stale_id_cannot_cancel_reused_entry() {
    let mut wheel: ArrayWheel<u32, 1> = ArrayWheel::new_array();
    let old = wheel.insert(at(10), 1).unwrap();
    assert_eq!(wheel.insert(at(10), 2), Err(Full(2)));
    assert_eq!(wheel.cancel(old), Some(1));
    let new = wheel.insert(at(20), 3).unwrap();
    assert_eq!(new.index(), old.index());
    assert_eq!(wheel.cancel(old), None);
    assert!(!wheel.reset(old, at(5)));
    assert_eq!(wheel.deadline(new), Some(at(20)));
    let mut fired = Vec::new();
    wheel.poll(at(30), |id, p| fired.push((id, p)));
    assert_eq!(fired, [(new, 3)]);
    assert_eq!(wheel.cancel(new), None, "fired ids are stale too");
}

#[test]
fn past_deadline_fires_next_poll() {
    let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_array();
    drain(&mut wheel, 1_000);
    let id = wheel.insert(at(5), 9).unwrap();
    assert_eq!(wheel.poll_at(), Some(at(1_000)));
    assert_eq!(drain(&mut wheel, 1_000), [(id, 9)]);
}

#[test]
fn long_jump_cascades_in_order() {
    let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_array();
    let deadlines = [3u64, 64, 65, 4_095, 4_096, 1 << 20, (1 << 36) + 7, 1 << 50, u64::MAX - 1, u64::MAX];
    for (i, d) in deadlines.iter().enumerate() {
        wheel.insert(at(*d), i as u32).unwrap();
    }
    let fired: Vec<u32> = drain(&mut wheel, u64::MAX).into_iter().map(|(_, p)| p).collect();
    assert_eq!(fired, (0..deadlines.len() as u32).collect::<Vec<_>>());
}

#[test]
fn reset_moves_timer_and_keeps_id() {
    let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_array();
    let id = wheel.insert(at(50), 1).unwrap();
    assert!(wheel.reset(id, at(5_000)));
    assert!(drain(&mut wheel, 4_999).is_empty());
    assert_eq!(wheel.poll_at().map(|t| t <= at(5_000)), Some(true));
    assert_eq!(drain(&mut wheel, 5_000), [(id, 1)]);
}

#[test]
fn next_expired_allows_rearming() {
    let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_array();
    wheel.insert(at(10), 0).unwrap();
    let mut count = 0;
    // A periodic timer re-armed from its own expiry: fires at 10, 20, ..., 100.
    while let Some((_, n)) = wheel.next_expired(at(100)) {
        count += 1;
        let next = wheel.elapsed().ticks() + 10;
        if next <= 100 {
            wheel.insert(at(next), n + 1).unwrap();
        }
    }
    assert_eq!(count, 10);
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Op {
    /// Insert at `elapsed + delta` (delta 0 means "already due").
    Insert(u64),
    /// Cancel the n-th live timer (or a stale id).
    Cancel(prop::sample::Index),
    /// Move the n-th live timer to `elapsed + delta`.
    Reset(prop::sample::Index, u64),
    /// Advance time by `delta` and fire.
    Advance(u64),
}

fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..70,
        3 => 0u64..5_000,
        2 => 0u64..(1 << 20),
        1 => 0u64..(1 << 40),
        1 => Just(1u64 << 36),
        1 => 0u64..u64::MAX / 4,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => delta().prop_map(Op::Insert),
        1 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        1 => (any::<prop::sample::Index>(), delta()).prop_map(|(i, d)| Op::Reset(i, d)),
        3 => delta().prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The wheel fires exactly the timers a sorted list says are due, in deadline order, never
    /// early; cancel and reset agree with the model; stale ids miss.
    #[test]
    fn matches_sorted_list_model(start in 0u64..(1 << 40), ops in proptest::collection::vec(op(), 1..120)) {
        let mut wheel: ArrayWheel<u32, 64> = ArrayWheel::new_at([const { Entry::VACANT }; 64], at(start));
        // The model: live timers as (deadline, id, payload).
        let mut model: Vec<(u64, TimerId, u32)> = Vec::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut now = start;
        for (n, op) in ops.into_iter().enumerate() {
            let payload = n as u32;
            match op {
                Op::Insert(d) => {
                    let deadline = now.saturating_add(d);
                    match wheel.insert(at(deadline), payload) {
                        Ok(id) => model.push((deadline, id, payload)),
                        Err(Full(p)) => { prop_assert_eq!(p, payload); prop_assert_eq!(model.len(), 64); }
                    }
                }
                Op::Cancel(pick) => {
                    if model.is_empty() {
                        if let Some(id) = dead.last() { prop_assert_eq!(wheel.cancel(*id), None); }
                    } else {
                        let (_, id, p) = model.swap_remove(pick.index(model.len()));
                        prop_assert_eq!(wheel.cancel(id), Some(p));
                        dead.push(id);
                    }
                }
                Op::Reset(pick, d) => {
                    if !model.is_empty() {
                        let i = pick.index(model.len());
                        let deadline = now.saturating_add(d);
                        prop_assert!(wheel.reset(model[i].1, at(deadline)));
                        model[i].0 = deadline;
                    }
                }
                Op::Advance(d) => {
                    now = now.saturating_add(d);
                    let mut fired = Vec::new();
                    wheel.poll(at(now), |id, p| fired.push((id, p)));
                    // Fired in deadline order, never early.
                    let deadlines: Vec<u64> = fired.iter().map(|(id, _)| {
                        model.iter().find(|m| m.1 == *id).map(|m| m.0).unwrap_or(u64::MAX)
                    }).collect();
                    prop_assert!(deadlines.windows(2).all(|w| w[0] <= w[1]), "order {:?}", deadlines);
                    prop_assert!(deadlines.iter().all(|d| *d <= now));
                    // Exactly the due set.
                    let mut expected: Vec<(TimerId, u32)> =
                        model.iter().filter(|m| m.0 <= now).map(|m| (m.1, m.2)).collect();
                    expected.sort();
                    fired.sort();
                    prop_assert_eq!(&fired, &expected);
                    model.retain(|m| m.0 > now);
                    dead.extend(fired.iter().map(|f| f.0));
                    prop_assert_eq!(wheel.elapsed(), at(now));
                }
            }
            prop_assert_eq!(wheel.len(), model.len());
            // poll_at is never later than the earliest deadline.
            if let Some(earliest) = model.iter().map(|m| m.0).min() {
                let poll_at = wheel.poll_at().unwrap().ticks();
                prop_assert!(poll_at <= earliest.max(now), "poll_at {} earliest {}", poll_at, earliest);
            } else {
                prop_assert_eq!(wheel.poll_at(), None);
            }
            for (deadline, id, p) in &model {
                prop_assert_eq!(wheel.deadline(*id), Some(at(*deadline)));
                prop_assert_eq!(wheel.get(*id), Some(p));
            }
            for id in dead.iter().rev().take(8) {
                prop_assert_eq!(wheel.deadline(*id), None);
            }
        }
    }
}
