//! Arbitrary frames from a hostile container: the input is split into frames (a length
//! byte each), every frame goes through the whole stack (classification, ARP/NDP, TCP
//! state machines, UDP flows), then the stack runs a turn. It must never panic, and it
//! must never connect anywhere but the host's loopback: the policy is sandboxed
//! (`outbound: false`) and the gateway's loopback stays closed, so a fuzzed SYN or
//! datagram can reach at most the discard port set as the DNS resolver.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nook_net::config::Config;
use nook_net::link::MemLink;
use nook_net::policy::Policy;
use nook_net::stack::Stack;

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        mtu: 1500,
        ..Config::default()
    };
    let policy = Policy {
        outbound: false,
        ..Policy::new(&cfg, "127.0.0.1:9".parse().unwrap())
    };
    let Ok(mut stack) = Stack::new(MemLink::default(), &cfg, policy) else {
        return;
    };
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        let _ = stack.inject(frame);
        rest = tail;
    }
    let _ = stack.turn(Some(Duration::ZERO));
});
