//! Who may hold a connection on this node, and how fast one user may
//! write: the caps that keep one user, one address or a crowd from taking
//! a node (`MAX_CONNECTIONS`, `MAX_CONNECTIONS_PER_USER`,
//! `MAX_CONNECTIONS_PER_IP`), the client address they count
//! (`X-Forwarded-For` believed only from `TRUSTED_PROXIES`), and the
//! per-user publish and direct-message rates (`USER_PUBLISH_*`,
//! `USER_DIRECT_*`), shared by all of a user's connections on the node.
//!
//! A connection holds a [`Permit`] from before its upgrade to its end;
//! dropping it gives its places back, so a refused or failed upgrade never
//! leaks a count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::http::HeaderMap;

use crate::config::AdmissionSettings;
use crate::session::limits::TokenBucket;

/// Why a connection was refused before its upgrade; each is one HTTP status
/// (`docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `MAX_CONNECTIONS` reached: 503 with `Retry-After` (another node may have room).
    #[error("this node holds its maximum of connections; retry shortly")]
    NodeFull,
    /// `MAX_CONNECTIONS_PER_IP` reached: 429.
    #[error("too many connections from this address")]
    PerIp,
    /// `MAX_CONNECTIONS_PER_USER` reached: 429.
    #[error("too many connections for this user")]
    PerUser,
}

struct UserState {
    connections: usize,
    publish: TokenBucket,
    direct: TokenBucket,
}

#[derive(Default)]
struct State {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    users: HashMap<String, UserState>,
}

/// The node's connection counts and per-user rates.
pub struct Admission {
    settings: AdmissionSettings,
    state: Mutex<State>,
}

/// One connection's places in the counts, given back on drop.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
    user: Option<String>,
}

impl Admission {
    /// Counts enforcing `settings`.
    pub fn new(settings: AdmissionSettings) -> Arc<Admission> {
        Arc::new(Admission {
            settings,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's address: the peer, or — when the peer is a trusted
    /// proxy — the nearest `X-Forwarded-For` entry that is not one.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(&self.settings.trusted_proxies, peer, headers)
    }

    /// Take a place on the node and for `ip` (before authentication, so
    /// a flood is refused cheaply).
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let ip = bucket_of(ip);
        let mut state = self.lock();
        let s = &self.settings;
        if s.max_connections > 0 && state.total >= s.max_connections {
            return Err(Refusal::NodeFull);
        }
        let here = state.per_ip.get(&ip).copied().unwrap_or(0);
        if s.max_per_ip > 0 && here >= s.max_per_ip {
            return Err(Refusal::PerIp);
        }
        state.total += 1;
        *state.per_ip.entry(ip).or_default() += 1;
        Ok(Permit {
            admission: self.clone(),
            ip,
            user: None,
        })
    }

    /// Count `permit` against `user` too (once authenticated).
    pub fn bind_user(&self, permit: &mut Permit, user: &str) -> Result<(), Refusal> {
        debug_assert!(permit.user.is_none());
        let mut state = self.lock();
        let (publish, direct) = (self.settings.publish_rate, self.settings.direct_rate);
        let entry = state
            .users
            .entry(user.to_owned())
            .or_insert_with(|| UserState {
                connections: 0,
                publish: TokenBucket::new(publish.0, publish.1, Instant::now()),
                direct: TokenBucket::new(direct.0, direct.1, Instant::now()),
            });
        let max = self.settings.max_per_user;
        if max > 0 && entry.connections >= max {
            return Err(Refusal::PerUser);
        }
        entry.connections += 1;
        permit.user = Some(user.to_owned());
        Ok(())
    }

    /// Whether `user` may publish (or broadcast) one more message now.
    pub fn allow_publish(&self, user: &str) -> bool {
        let mut state = self.lock();
        state
            .users
            .get_mut(user)
            .is_none_or(|u| u.publish.take(Instant::now()))
    }

    /// Whether `user` may send one more direct message now.
    pub fn allow_direct(&self, user: &str) -> bool {
        let mut state = self.lock();
        state
            .users
            .get_mut(user)
            .is_none_or(|u| u.direct.take(Instant::now()))
    }

    /// Connections counted on this node (upgrading ones included).
    pub fn connections(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.total -= 1;
        if let Some(n) = state.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
        if let Some(user) = &self.user {
            if let Some(u) = state.users.get_mut(user) {
                u.connections -= 1;
                if u.connections == 0 {
                    state.users.remove(user);
                }
            }
        }
    }
}

/// What one address counts as: IPv4 as is, IPv6 by its /64 (one host
/// usually holds a whole /64, so counting single addresses caps nothing).
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client address of a request from `peer`: walk `X-Forwarded-For`
/// from the right while the hop that added the entry is trusted; the
/// first entry added by an untrusted hop is the client. An unreadable
/// entry stops the walk at the last trusted hop.
pub fn client_ip(trusted: &[ipnet::IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(node: usize, ip: usize, user: usize) -> AdmissionSettings {
        AdmissionSettings {
            max_connections: node,
            max_per_user: user,
            max_per_ip: ip,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            publish_rate: (1000.0, 2),
            direct_rate: (1000.0, 1),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_are_counted_and_given_back() {
        let a = Admission::new(settings(3, 2, 1));
        let p1 = a.enter(ip("1.1.1.1")).unwrap();
        let _p2 = a.enter(ip("1.1.1.1")).unwrap();
        assert_eq!(a.enter(ip("1.1.1.1")).err(), Some(Refusal::PerIp));
        let mut p3 = a.enter(ip("2.2.2.2")).unwrap();
        assert_eq!(a.enter(ip("3.3.3.3")).err(), Some(Refusal::NodeFull));
        drop(p1);
        let mut p4 = a.enter(ip("3.3.3.3")).unwrap();
        a.bind_user(&mut p3, "ann").unwrap();
        assert_eq!(a.bind_user(&mut p4, "ann"), Err(Refusal::PerUser));
        drop(p3);
        a.bind_user(&mut p4, "ann").unwrap();
        assert_eq!(a.connections(), 2);
    }

    #[test]
    fn zero_means_no_cap() {
        let a = Admission::new(settings(0, 0, 0));
        let mut permits: Vec<Permit> = (0..100).map(|_| a.enter(ip("1.1.1.1")).unwrap()).collect();
        for p in &mut permits {
            a.bind_user(p, "ann").unwrap();
        }
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let a = Admission::new(settings(0, 1, 0));
        let _p = a.enter(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            a.enter(ip("2001:db8:1:2::ffff")).err(),
            Some(Refusal::PerIp)
        );
        assert!(a.enter(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn rates_are_per_user_across_connections() {
        let a = Admission::new(settings(0, 0, 0));
        let mut p1 = a.enter(ip("1.1.1.1")).unwrap();
        let mut p2 = a.enter(ip("1.1.1.1")).unwrap();
        a.bind_user(&mut p1, "ann").unwrap();
        a.bind_user(&mut p2, "ann").unwrap();
        assert!(a.allow_publish("ann"));
        assert!(a.allow_publish("ann"));
        assert!(
            !a.allow_publish("ann"),
            "burst of 2 shared by both connections"
        );
        assert!(a.allow_direct("ann"));
        assert!(!a.allow_direct("ann"));
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_peers_only() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 7.7.7.7, 10.1.1.1".parse().unwrap(),
        );
        assert_eq!(
            client_ip(&trusted, ip("8.8.8.8"), &h),
            ip("8.8.8.8"),
            "untrusted peer"
        );
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("7.7.7.7"));
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "junk, 10.2.2.2".parse().unwrap());
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("10.2.2.2"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("2001:db8::1"));
    }
}
