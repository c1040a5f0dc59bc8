//! Test input from capture files (the corpus under `tracer/tests/data`).

/// TCP payloads of a classic little-endian Ethernet/IPv4 pcap: (dst port, ts ns, payload).
pub fn payloads(pcap: &[u8]) -> Vec<(u16, u64, Vec<u8>)> {
    let u16be = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let u32le = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let ns_per_unit = match u32le(pcap, 0) {
        0xa1b2_c3d4 => 1_000,
        0xa1b2_3c4d => 1,
        magic => panic!("unsupported pcap magic {magic:#x}"),
    };
    let mut payloads = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let ts = u64::from(u32le(pcap, at)) * 1_000_000_000
            + u64::from(u32le(pcap, at + 4)) * ns_per_unit;
        let len = u32le(pcap, at + 8) as usize;
        let frame = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        let ip = &frame[14..];
        if u16be(frame, 12) != 0x0800 || ip[9] != 6 {
            continue;
        }
        let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..usize::from(u16be(ip, 2))];
        let payload = &tcp[usize::from(tcp[12] >> 4) * 4..];
        if !payload.is_empty() {
            payloads.push((u16be(tcp, 2), ts, payload.to_vec()));
        }
    }
    payloads
}
