/// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash for short inputs.
///
/// Format 2 keys directory names, back references and xattr names by hash
/// (docs/ARCHITECTURE.md, "Keys and items"). The key is random per image, so names chosen
/// to collide under one image's key do not collide under another's, and nobody who cannot
/// read the image can aim at one bucket (ext4's htree seeds its hash per filesystem for the
/// same reason). SipHash rather than Swift's `Hasher` (SipHash-1-3 too, but seeded per
/// process: the values would change at every mount) or CRC-32C (not keyed, and trivial to
/// collide). Checked against the paper's reference vectors.
public struct SipHash24: Sendable, Equatable {
    public let key0: UInt64
    public let key1: UInt64

    public init(key0: UInt64, key1: UInt64) {
        self.key0 = key0
        self.key1 = key1
    }

    /// The hash of `bytes`.
    public func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var state = State(key0: key0, key1: key1)
        for byte in bytes { state.absorb(byte) }
        return state.finish()
    }

    /// The hash of `prefix` (8 bytes, little-endian) followed by `bytes`.
    public func hash(prefix: UInt64, _ bytes: some Sequence<UInt8>) -> UInt64 {
        var state = State(key0: key0, key1: key1)
        for shift in stride(from: 0, to: 64, by: 8) { state.absorb(UInt8(truncatingIfNeeded: prefix >> UInt64(shift))) }
        for byte in bytes { state.absorb(byte) }
        return state.finish()
    }

    /// The running state: four words, the pending bytes of the current 8-byte word, and
    /// the count of bytes absorbed (its low byte ends the message).
    struct State {
        var v0, v1, v2, v3: UInt64
        var word: UInt64 = 0
        var length: UInt64 = 0

        init(key0: UInt64, key1: UInt64) {
            v0 = key0 ^ 0x736f6d6570736575
            v1 = key1 ^ 0x646f72616e646f6d
            v2 = key0 ^ 0x6c7967656e657261
            v3 = key1 ^ 0x7465646279746573
        }

        mutating func absorb(_ byte: UInt8) {
            word |= UInt64(byte) << ((length & 7) * 8)
            length &+= 1
            if length & 7 == 0 {
                compress(word)
                word = 0
            }
        }

        mutating func finish() -> UInt64 {
            compress(word | (length & 0xff) << 56)
            v2 ^= 0xff
            for _ in 0..<4 { round() }
            return v0 ^ v1 ^ v2 ^ v3
        }

        private mutating func compress(_ m: UInt64) {
            v3 ^= m
            round()
            round()
            v0 ^= m
        }

        private mutating func round() {
            v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
            v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
            v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
            v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
        }
    }
}

extension UInt64 {
    @inline(__always) fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 {
        (self << count) | (self >> (64 - count))
    }
}
