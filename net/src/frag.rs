//! IP fragments: reassembly of what the container sends, fragmentation of what it gets.
//!
//! A UDP datagram (or ICMP echo) larger than the tap's MTU travels as IP fragments: the
//! container's kernel splits what it sends, and the netstack must split what it writes,
//! since a host socket hands over whole datagrams of up to 64 KiB. TCP never fragments
//! (the container's kernel sizes segments to the MTU), so only the netstack's own UDP
//! and ICMP paths come here; smoltcp's fragmentation features would only serve smoltcp's
//! sockets, which those paths bypass.
//!
//! Reassembly keeps a few fixed slots of 64 KiB, allocated on first use and reused
//! (no allocation per fragment); smoltcp's `Assembler` tracks the holes, so duplicates
//! and overlaps cannot fake completion. A slot not completed within [`REASSEMBLY_TIMEOUT`]
//! is reused, and when every slot is busy the oldest is given up, as a kernel does under
//! memory pressure: fragments of a lost datagram cannot pin memory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::storage::Assembler;
use smoltcp::wire::IpProtocol;

/// Datagrams being reassembled at once.
pub const SLOTS: usize = 4;
/// Largest reassembled IP payload (the IPv4 total length field's bound).
pub const MAX_DATAGRAM: usize = 65535;
/// How long the fragments of one datagram may take to arrive.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What identifies the fragments of one datagram (RFC 791 / RFC 8200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: IpProtocol,
}

/// One fragment as read from the wire.
pub struct Fragment<'a> {
    pub key: FragKey,
    /// Byte offset of `data` in the reassembled payload.
    pub offset: usize,
    pub more: bool,
    pub data: &'a [u8],
}

struct Slot {
    key: Option<FragKey>,
    buf: Vec<u8>,
    holes: Assembler,
    /// The payload's length, known once the last fragment has arrived.
    total: Option<usize>,
    started: Instant,
}

#[derive(Default)]
pub struct Reassembly {
    slots: Vec<Slot>,
}

impl Reassembly {
    /// Adds a fragment; returns the slot holding the complete payload once the datagram
    /// is whole (read it with [`Reassembly::payload`], then [`Reassembly::release`] it).
    pub fn add(&mut self, frag: Fragment, now: Instant) -> Option<usize> {
        let end = frag.offset.checked_add(frag.data.len())?;
        if end > MAX_DATAGRAM || (frag.more && !frag.data.len().is_multiple_of(8)) {
            return None;
        }
        let i = self.slot_for(frag.key, now);
        let slot = &mut self.slots[i];
        if !frag.more {
            if slot.total.is_some_and(|t| t != end) {
                // Two different ends: not one datagram.
                slot.key = None;
                return None;
            }
            slot.total = Some(end);
        }
        if slot.total.is_some_and(|t| end > t)
            || slot.holes.add(frag.offset, frag.data.len()).is_err()
        {
            slot.key = None;
            return None;
        }
        slot.buf[frag.offset..end].copy_from_slice(frag.data);
        match slot.total {
            Some(t) if slot.holes.peek_front() >= t => Some(i),
            _ => None,
        }
    }

    pub fn payload(&self, slot: usize) -> &[u8] {
        let s = &self.slots[slot];
        &s.buf[..s.total.unwrap_or(0)]
    }

    pub fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.key = None;
        }
    }

    /// Datagrams with fragments pending.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.key.is_some()).count()
    }

    fn slot_for(&mut self, key: FragKey, now: Instant) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.key == Some(key)) {
            if now.duration_since(self.slots[i].started) <= REASSEMBLY_TIMEOUT {
                return i;
            }
        }
        let free = self
            .slots
            .iter()
            .position(|s| s.key.is_none() || now.duration_since(s.started) > REASSEMBLY_TIMEOUT);
        let i = match free {
            Some(i) => i,
            None if self.slots.len() < SLOTS => {
                self.slots.push(Slot {
                    key: None,
                    buf: vec![0; MAX_DATAGRAM],
                    holes: Assembler::new(),
                    total: None,
                    started: now,
                });
                self.slots.len() - 1
            }
            None => (0..self.slots.len())
                .min_by_key(|&i| self.slots[i].started)
                .unwrap_or(0),
        };
        let s = &mut self.slots[i];
        s.key = Some(key);
        s.holes.clear();
        s.total = None;
        s.started = now;
        i
    }
}

/// How many payload bytes each fragment carries: what fits the MTU after the IP header
/// (and IPv6's fragment header), rounded down to the 8-byte unit of the offset field.
pub fn fragment_payload(mtu: usize, v6: bool) -> usize {
    let hdr = if v6 { 40 + 8 } else { 20 };
    (mtu - hdr) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: "10.0.2.100".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            id,
            proto: IpProtocol::Udp,
        }
    }

    #[test]
    fn reassembles_in_any_order_and_rejects_inconsistent_ends() {
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let now = Instant::now();
        let mut r = Reassembly::default();
        let f = |off: usize, len: usize, more: bool| Fragment {
            key: key(7),
            offset: off,
            more,
            data: &data[off..off + len],
        };
        assert_eq!(r.add(f(1480, 1480, true), now), None);
        assert_eq!(r.add(f(2960, 40, false), now), None);
        // A duplicate changes nothing.
        assert_eq!(r.add(f(1480, 1480, true), now), None);
        let slot = r.add(f(0, 1480, true), now).expect("complete");
        assert_eq!(r.payload(slot), &data[..]);
        r.release(slot);
        assert_eq!(r.pending(), 0);

        // Two fragments claiming different ends: dropped.
        assert_eq!(r.add(f(2960, 40, false), now), None);
        let other_end = Fragment {
            key: key(7),
            offset: 1480,
            more: false,
            data: &data[1480..1488],
        };
        assert_eq!(r.add(other_end, now), None);
        assert_eq!(r.pending(), 0);
        // A non-final fragment that is not a multiple of 8 bytes is malformed.
        assert_eq!(r.add(f(0, 13, true), now), None);
    }

    #[test]
    fn stale_and_excess_datagrams_give_way() {
        let data = [1u8; 16];
        let now = Instant::now();
        let mut r = Reassembly::default();
        for id in 0..(SLOTS as u32 + 3) {
            let frag = Fragment {
                key: key(id),
                offset: 0,
                more: true,
                data: &data[..8],
            };
            assert_eq!(r.add(frag, now), None);
        }
        assert_eq!(r.pending(), SLOTS, "bounded: the oldest were given up");
        let later = now + REASSEMBLY_TIMEOUT + Duration::from_secs(1);
        // The stale first half of id 0 is gone: the second half alone completes nothing.
        let tail = Fragment {
            key: key(SLOTS as u32 + 2),
            offset: 8,
            more: false,
            data: &data[..8],
        };
        assert_eq!(r.add(tail, later), None);
        assert_eq!(fragment_payload(1500, false), 1480);
        assert_eq!(fragment_payload(1500, true), 1448);
    }
}
