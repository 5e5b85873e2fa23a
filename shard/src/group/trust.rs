//! The trust boundary of the group-to-group requests. `Pull` hands out a shard's data and
//! `Delete` drops a handed-off shard: were a client to send `Delete` before the new owner
//! pulled, the shard would be lost. So a host serves them only to the members of the groups
//! of the installed config or the one before — the only groups that can own or have owned a
//! moving shard — as [`peer_is_member`] decides from the connection's remote address.
//!
//! The check is by IP address: a member's address in a config is `IP:port` (or
//! `localhost:port`); a host name is matched by no peer, so a deployment whose groups
//! advertise names refuses their pulls — give groups IP addresses. Everything on one machine
//! shares its loopback address, so on one machine this keeps out other machines, not other
//! local processes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::group::protocol::GroupRequestBody;
use crate::group::state::Progress;

/// Whether `body` is one of the group-to-group requests the trust boundary guards.
pub fn is_group_to_group(body: &GroupRequestBody) -> bool {
    matches!(
        body,
        GroupRequestBody::Pull { .. } | GroupRequestBody::Delete { .. }
    )
}

/// The IP address of a member's address as configs carry it, if it has one.
fn member_ip(addr: &str) -> Option<Vec<IpAddr>> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(vec![a.ip().to_canonical()]);
    }
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.eq_ignore_ascii_case("localhost").then(|| {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    })
}

/// Whether `peer` is the address of a member of a group of `progress`'s installed config or
/// of the one before.
pub fn peer_is_member(peer: IpAddr, progress: &Progress) -> bool {
    let peer = peer.to_canonical();
    progress
        .config
        .groups
        .values()
        .chain(progress.prev.groups.values())
        .flatten()
        .filter_map(|a| member_ip(a))
        .flatten()
        .any(|ip| ip == peer)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ShardConfig;

    fn progress(now: &[(u64, &[&str])], before: &[(u64, &[&str])]) -> Progress {
        let config = |num, groups: &[(u64, &[&str])]| ShardConfig {
            num,
            shards: vec![0; 4],
            groups: groups
                .iter()
                .map(|(g, a)| (*g, a.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
        };
        Progress {
            config: config(2, now),
            prev: config(1, before),
            shards: Vec::new(),
        }
    }

    #[test]
    fn members_of_the_current_and_previous_config_are_trusted() {
        let p = progress(&[(1, &["10.0.0.1:7001"])], &[(2, &["10.0.0.2:7001"])]);
        assert!(peer_is_member("10.0.0.1".parse().unwrap(), &p));
        assert!(peer_is_member("10.0.0.2".parse().unwrap(), &p));
        assert!(!peer_is_member("10.0.0.3".parse().unwrap(), &p));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_members_and_localhost_is_loopback() {
        let p = progress(&[(1, &["10.0.0.1:7001", "localhost:7002"])], &[]);
        assert!(peer_is_member("::ffff:10.0.0.1".parse().unwrap(), &p));
        assert!(peer_is_member("127.0.0.1".parse().unwrap(), &p));
        assert!(peer_is_member("::1".parse().unwrap(), &p));
    }

    #[test]
    fn host_names_and_garbage_match_no_peer() {
        let p = progress(&[(1, &["db1.example:7001", "nonsense", "1.2.3.4"])], &[]);
        assert!(!peer_is_member("1.2.3.4".parse().unwrap(), &p));
        assert!(!peer_is_member("127.0.0.1".parse().unwrap(), &p));
    }

    #[test]
    fn no_groups_trust_no_one() {
        let p = progress(&[], &[]);
        assert!(!peer_is_member("127.0.0.1".parse().unwrap(), &p));
    }
}
