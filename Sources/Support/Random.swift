import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014; Vigna's reference C). Our own generator so that a seed
/// gives the same prompts, initial weights and corpus order on every machine and Swift version:
/// the standard library's `shuffled(using:)`/`randomElement(using:)` algorithms are not promised
/// to stay fixed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for one purpose of a seed (initial weights, epoch e's order, …), independent
    /// of the generators of the seed's other streams.
    public init(seed: UInt64, stream: UInt64) {
        var mixer = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        state = mixer.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0..<n` (n ≥ 1), exactly: Lemire's multiply-shift with rejection.
    public mutating func next(below n: Int) -> Int {
        let bound = UInt64(n)
        var (high, low) = next().multipliedFullWidth(by: bound)
        if low < bound {
            let threshold = (0 &- bound) % bound
            while low < threshold { (high, low) = next().multipliedFullWidth(by: bound) }
        }
        return Int(high)
    }

    /// One element of a non-empty array.
    public mutating func pick<T>(_ items: [T]) -> T { items[next(below: items.count)] }

    /// Uniform in (0, 1): 53 random bits, never 0.
    public mutating func unit() -> Double { (Double(next() >> 11) + 0.5) / 9_007_199_254_740_992 }

    /// A standard normal sample (Box–Muller, one of the pair).
    public mutating func normal() -> Double {
        let u1 = unit(), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// A uniformly random permutation of `0 ..< n` (Fisher–Yates).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n < 2 { return p }
        for i in stride(from: n - 1, through: 1, by: -1) { p.swapAt(i, next(below: i + 1)) }
        return p
    }
}
