//! IPv4 address pools: service cluster IPs, and the simulator's pod IPs and load-balancer addresses.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Addresses of one IPv4 CIDR, handed out next-fit (a released address is not reused until the
/// pool wraps around, so a new pod rarely gets the address of the one just deleted).
#[derive(Debug)]
pub(crate) struct IpPool {
    base: u32,
    size: u32,
    next: u32,
    used: HashSet<u32>,
}

impl IpPool {
    /// A pool over `cidr` (such as `10.244.0.0/16`) without its network and broadcast addresses.
    pub fn new(cidr: &str) -> Result<Self, String> {
        let (addr, bits) = cidr.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
        let bits: u32 = bits.parse().map_err(|e| format!("bad prefix length: {e}"))?;
        if !(1..=30).contains(&bits) {
            return Err("prefix length must be between 1 and 30".to_string());
        }
        let size = 1u32 << (32 - bits);
        Ok(IpPool {
            base: u32::from(addr) & !(size - 1),
            size,
            next: 1,
            used: HashSet::new(),
        })
    }

    /// The next free address, if any.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        for _ in 1..self.size - 1 {
            let offset = self.next;
            self.next = if offset + 1 >= self.size - 1 {
                1
            } else {
                offset + 1
            };
            if self.used.insert(offset) {
                return Some(Ipv4Addr::from(self.base + offset));
            }
        }
        None
    }

    /// Marks an address found in an existing object as used; false when it is outside the pool
    /// or already taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some_and(|offset| self.used.insert(offset))
    }

    /// Whether `ip` is a usable address of the pool (taken or not).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(offset) = self.offset(ip) {
            self.used.remove(&offset);
        }
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let value = u32::from(ip);
        (value > self.base && value < self.base + self.size - 1).then(|| value - self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_next_fit_and_reuses_after_wrapping() {
        let mut pool = IpPool::new("10.244.0.0/30").unwrap();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("10.244.0.1".into(), "10.244.0.2".into())
        );
        assert!(pool.allocate().is_none());
        pool.release(a);
        assert_eq!(pool.allocate(), Some(a));
        assert!(!pool.reserve(b), "taken");
        assert!(!pool.reserve("10.0.0.1".parse().unwrap()), "outside");
        assert!(IpPool::new("10.244.0.0").is_err());
        assert!(IpPool::new("10.244.0.0/31").is_err());
    }
}
