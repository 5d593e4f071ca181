//! The classic BPF filter libpcap compiles onto each handle, so the kernel copies into the ring
//! only what reassembly needs: TCP on the server ports, one copy of a loopback packet, and no
//! pure ACKs.
//!
//! Why a pure ACK may go: reassembly (`tracer_core::reassembly`) reads an ACK number for two
//! things. (1) Causal order between directions: a segment's *data* waits until the bytes its
//! ACK says the sender had received were delivered the other way; a segment without data
//! delivers nothing, so its ACK orders nothing. (2) Loss: bytes the peer acknowledged but the
//! capture never saw are declared a gap after a grace of further segments. Every data segment,
//! SYN, FIN and RST still carries its ACK number, so an acknowledged hole is still found from
//! the next one of those (or after the reorder wait, as for a hole nobody acknowledged); only
//! a capture that is already losing packets can see a gap declared later. What is kept: any
//! segment with a payload, and every SYN, FIN or RST (the handshake syncs the streams, FINs end
//! them, a RST closes the connection), whatever else they carry.
//!
//! Loopback: a packet between two local sockets passes `lo` twice, once outgoing and once
//! incoming, and a packet socket on `any` or `lo` receives both. libpcap throws the outgoing copy
//! away only after the kernel has copied it into the ring; on `any` the filter drops it before.

/// Which copy of a loopback packet a handle must refuse in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loopback {
    /// The `any` device: outgoing packets of the loopback interface with this index.
    Any { ifindex: u32 },
    /// Any other interface, `lo` by name included: nothing refused in the kernel. On `lo`
    /// libpcap 1.10 drops the outgoing copy itself; `inbound` would refuse it in the kernel,
    /// but libpcap then rejects every packet in user space too (the raw handle's filter
    /// re-run there cannot read the packet type): 0 captured of 8 received, measured.
    Other,
}

/// What of a TCP segment reassembly needs: a payload, or SYN, FIN or RST. IPv4 and IPv6 apart
/// (libpcap's `tcp[]` addresses IPv4 only); the payload length is the IP length less both
/// headers, so a GSO packet whose length field is 0 computes as non-zero and is kept.
const NEEDED_BY_REASSEMBLY: &str = "((ip and (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 \
     or ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) != 0)) \
     or (ip6 and (ip6[53] & 0x7 != 0 or ip6[4:2] - ((ip6[52] & 0xf0) >> 2) != 0)))";

/// `tcp and (port a or port b ...)`.
fn on_ports(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    format!("tcp and ({})", ports.join(" or "))
}

/// The filter for recorded files and any link type: the ports and what reassembly needs (a
/// file has no packet direction to test, except a cooked one).
pub fn for_files(ports: &[u16]) -> String {
    format!("{} and {NEEDED_BY_REASSEMBLY}", on_ports(ports))
}

/// The filter for a live handle: [`for_files`] and one copy of a loopback packet.
pub fn for_live(ports: &[u16], loopback: Loopback) -> String {
    let base = for_files(ports);
    match loopback {
        Loopback::Any { ifindex } => format!("{base} and not (outbound and ifindex {ifindex})"),
        Loopback::Other => base,
    }
}

/// How the handle on `interface` treats loopback, from the system's interface list.
pub fn loopback_of(interface: &str) -> Loopback {
    if interface == "any" {
        let devices = pcap::Device::list().unwrap_or_default();
        // `lo` in every network namespace; libpcap assumes the same.
        let name = devices.iter().find(|d| d.flags.is_loopback()).map_or("lo", |d| d.name.as_str());
        let c = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: a valid NUL-terminated string; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        return if ifindex == 0 { Loopback::Other } else { Loopback::Any { ifindex } };
    }
    Loopback::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_ports_and_the_loopback_copy() {
        assert!(for_files(&[11434]).starts_with("tcp and (port 11434) and ((ip and "));
        assert!(for_files(&[1, 2]).starts_with("tcp and (port 1 or port 2) and "));
        assert!(for_live(&[1], Loopback::Any { ifindex: 1 }).ends_with(" and not (outbound and ifindex 1)"));
        assert_eq!(for_live(&[1], Loopback::Other), for_files(&[1]));
    }

    #[test]
    fn every_filter_compiles() {
        // Compiled as libpcap would for a live `any` handle (cooked v2) and for Ethernet files.
        let sll2 = pcap::Capture::dead(pcap::Linktype(276)).unwrap();
        let eth = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for f in [for_files(&[11434, 8080]), for_live(&[11434], Loopback::Any { ifindex: 1 })] {
            sll2.compile(&f, true).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        eth.compile(&for_files(&[11434]), true).unwrap();
    }
}
