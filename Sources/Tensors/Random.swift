/// A seeded generator (xoshiro256**, state filled by SplitMix64) so runs are reproducible
/// and the state can be saved in checkpoints.
package struct SeededRNG: RandomNumberGenerator, Sendable, Codable, Equatable {
    package private(set) var state: [UInt64]

    package init(seed: UInt64) {
        var z = seed
        var s = [UInt64](repeating: 0, count: 4)
        for i in 0..<4 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            s[i] = x ^ (x >> 31)
        }
        state = s
    }

    package mutating func next() -> UInt64 {
        let result = rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]
        state[3] ^= state[1]
        state[1] ^= state[2]
        state[0] ^= state[3]
        state[2] ^= t
        state[3] = rotl(state[3], 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1) with 24 random bits (every value exactly representable).
    package mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 random bits.
    package mutating func uniformDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Standard normal by Box-Muller (one value per call; simple and deterministic).
    package mutating func normal() -> Float {
        let u1 = max(uniformDouble(), 1e-300)
        let u2 = uniformDouble()
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    package mutating func fillNormal(_ t: Tensor, std: Float = 1) {
        for i in 0..<t.count { t.ptr[i] = normal() * std }
    }
}

import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }

/// Hashes that stay the same across runs, machines and Swift versions (Swift's `Hasher` is
/// seeded per process): for split assignment, per-problem seeds, digests and fingerprints.
package enum StableHash {
    package static let fnvOffset: UInt64 = 0xCBF2_9CE4_8422_2325
    static let fnvPrime: UInt64 = 0x0000_0100_0000_01B3
    package static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// FNV-1a, 64-bit, of `bytes`, continuing from `h`.
    @inline(__always)
    package static func fnv1a<S: Sequence>(_ bytes: S, from h: UInt64 = fnvOffset) -> UInt64 where S.Element == UInt8 {
        var h = h
        for byte in bytes { h = (h ^ UInt64(byte)) &* fnvPrime }
        return h
    }

    /// FNV-1a of a string's UTF-8 bytes.
    package static func fnv1a(_ text: String) -> UInt64 { fnv1a(text.utf8) }

    /// SplitMix64's output function (the bit mixer, without the state increment).
    @inline(__always)
    package static func mix64(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One SplitMix64 step from state `x`: the golden-ratio increment, then the mixer.
    package static func splitMix(_ x: UInt64) -> UInt64 { mix64(x &+ golden) }
}
