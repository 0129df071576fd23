//! The board's Ethernet address, derived from all 96 bits of the chip's unique ID.
//!
//! The STM32H7 unique ID (RM0433, "Unique device ID register") is the die's X and Y position on
//! its wafer (bytes 0-3), the wafer number (byte 4) and the lot number (bytes 5-11, ASCII). Any
//! part of it alone repeats across boards: every wafer has a die at each position, and a lot has
//! many wafers. So every bit goes through a 64-bit hash (FNV-1a over the 12 bytes, then the
//! murmur3 finalizer so that each input bit moves about half the output bits), and 48 bits of it
//! make the address, of which the first octet gives up two: the locally administered bit is set
//! and the group (multicast) bit cleared (IEEE 802, bits 1 and 0 of the first octet). Two boards
//! then share an address with probability 2^-46.
//!
//! A board crate builds only for its target, so it has no host tests: [`from_uid`] is a
//! `const fn` and its checks below are evaluated at compile time, failing the build (and
//! `cargo xtask ci boards`) if they do not hold.

/// The IEEE 802 bit of the first octet that marks a locally administered address.
const LOCAL: u8 = 0b10;
/// The IEEE 802 bit of the first octet that marks a group (multicast) address.
const GROUP: u8 = 0b01;

/// A locally administered unicast MAC address derived from every bit of `uid`.
pub const fn from_uid(uid: &[u8; 12]) -> [u8; 6] {
    let hash = mix(fnv1a(uid)).to_le_bytes();
    [(hash[0] | LOCAL) & !GROUP, hash[1], hash[2], hash[3], hash[4], hash[5]]
}

/// 64-bit FNV-1a.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// murmur3's 64-bit finalizer (`fmix64`): full avalanche.
const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Compile-time checks of [`from_uid`] (see the module docs).
const _: () = {
    /// A UID: die (X, Y) on the wafer, the wafer, the lot.
    const fn uid(x: u16, y: u16, wafer: u8, lot: &[u8; 7]) -> [u8; 12] {
        let (x, y) = (x.to_le_bytes(), y.to_le_bytes());
        [x[0], x[1], y[0], y[1], wafer, lot[0], lot[1], lot[2], lot[3], lot[4], lot[5], lot[6]]
    }
    const fn differ(a: [u8; 6], b: [u8; 6]) -> bool {
        let mut i = 0;
        while i < 6 {
            if a[i] != b[i] {
                return true;
            }
            i += 1;
        }
        false
    }
    let board = from_uid(&uid(21, 37, 7, b"AB12345"));
    // The same die position on another wafer, or in another lot, is another board.
    assert!(differ(board, from_uid(&uid(21, 37, 8, b"AB12345"))), "the wafer number counts");
    assert!(differ(board, from_uid(&uid(21, 37, 7, b"AB12346"))), "the lot number counts");
    assert!(differ(board, from_uid(&uid(22, 37, 7, b"AB12345"))), "the die position counts");
    // Locally administered unicast, whatever the hash gives: try many UIDs.
    let mut n = 0;
    while n < 256 {
        let mac = from_uid(&uid(n, 0, n as u8, b"AB12345"));
        assert!(mac[0] & LOCAL == LOCAL, "locally administered");
        assert!(mac[0] & GROUP == 0, "unicast");
        n += 1;
    }
};
