import Foundation

/// One dropout mask: inverted dropout (a kept element × 1/(1 − p), a dropped one 0), element i
/// kept when the top 32 bits of `splitMix64(key, i)` are at least ⌊p · 2³²⌋. The mask is a pure
/// function of the key and the element's index, so a backward pass (or a resumed run, or another
/// process) regenerates it exactly instead of storing it; no generator state is kept anywhere.
public struct DropoutMask: Sendable, Equatable {
    public let key: UInt64
    /// Elements whose top 32 bits fall below this are dropped.
    public let threshold: UInt64
    /// 1/(1 − p), what a kept element is multiplied by.
    public let scale: Float

    /// The mask of probability `p` (0 ≤ p < 1) under `key`.
    public init(key: UInt64, probability p: Double) {
        precondition(p >= 0 && p < 1, "dropout probability \(p) is outside [0, 1)")
        self.key = key
        threshold = UInt64(p * 4_294_967_296)
        scale = Float(1 / (1 - p))
    }

    /// The SplitMix64 golden-ratio increment.
    public static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// SplitMix64's output function (Vigna's reference C).
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The key of a sequence of words: `k = mix(words[0] + golden)`, then for every further word
    /// `k = mix((k ^ word) + golden)` (wrapping arithmetic).
    public static func key(_ words: [UInt64]) -> UInt64 {
        var k = mix(words[0] &+ golden)
        for w in words.dropFirst() { k = mix((k ^ w) &+ golden) }
        return k
    }

    /// Whether element `i` is kept: SplitMix64 seeded with `key`, its (i + 1)-th output.
    @inline(__always)
    public func keeps(_ i: Int) -> Bool { Self.mix(key &+ UInt64(i + 1) &* Self.golden) >> 32 >= threshold }

    /// `out[i] = inp[i] · scale` where element `offset + i` is kept, else 0, for i < n (`out` may
    /// be `inp`). Split over the cores.
    public func apply(out: FloatPointer, inp: ConstFloatPointer, n: Int, offset: Int = 0) {
        let (key, threshold, scale) = (key, threshold, scale)
        parallelChunks(n) { lo, hi in
            var state = key &+ UInt64(offset + lo) &* Self.golden
            for i in lo..<hi {
                state &+= Self.golden
                out[i] = Self.mix(state) >> 32 >= threshold ? inp[i] * scale : 0
            }
        }
    }

    /// The fraction of elements `0 ..< n` kept (tests).
    public func keptFraction(_ n: Int) -> Double { Double((0..<n).filter(keeps).count) / Double(max(n, 1)) }
}
