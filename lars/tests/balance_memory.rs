//! What the balancer costs per module: 10,000 modules of 3 nodes each, measured by a counting
//! global allocator (heap bytes live after they are built, allocator overhead not included).
//!
//! Issue 14 measures the agent's memory with 10,000 modules; this is the balancer's share of it.
//! The bound is loose on purpose (a regression check, not a benchmark): the figure is printed,
//! `cargo test -p doorway-lars --test balance_memory -- --nocapture` shows it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicIsize, Ordering};

use doorway_lars::balance::{Balancer, Config, Instant, ModuleId};
use doorway_lars::HostInfo;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counter is a side effect that touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is `System::realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn ten_thousand_modules_of_three_nodes_cost_under_a_kilobyte_each() {
    const MODULES: i32 = 10_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut balancer = Balancer::new(Config::default()).unwrap();
    let now = Instant::from_millis(1_000);
    for modid in 0..MODULES {
        let module = ModuleId::new(modid, 1);
        balancer.get_host(module, now).unwrap_err();
        assert_eq!(balancer.modules_to_refresh(), [module], "a new module is asked for at once");
        let route: Vec<HostInfo> = (1..=3u8)
            .map(|n| {
                HostInfo::from_addr(SocketAddrV4::new(Ipv4Addr::new(10, 0, (modid % 250) as u8, n), 7000))
            })
            .collect();
        balancer.update_route(module, &route, now).unwrap();
        balancer.get_host(module, now).unwrap();
    }
    let per_module = (LIVE.load(Ordering::Relaxed) - before) / isize::try_from(MODULES).unwrap();
    println!("balancer: {per_module} heap bytes per module of 3 nodes ({MODULES} modules)");
    assert!(per_module < 1024, "{per_module} bytes per module");
    assert_eq!(balancer.len(), MODULES as usize);
}
