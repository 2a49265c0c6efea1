/// MT19937 as numpy's legacy `np.random.RandomState(seed)` runs it (Matsumoto & Nishimura's
/// `init_genrand` seeding and tempering), with `RandomState.randint(0, n)`'s masked rejection
/// sampling, so that a bootstrap the companion code draws with `RandomState(42).choice(data,
/// size=n)` is drawn here index for index.
public struct MersenneTwister: Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// `RandomState(seed)` for a seed below 2³².
    public init(seed: UInt32) {
        state[0] = seed
        for i in 1..<624 { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
    }

    /// The next tempered 32-bit output (`genrand_int32`).
    public mutating func next() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        return y ^ (y >> 18)
    }

    /// Uniform in `0..<n` (1 ≤ n ≤ 2³²) as legacy `randint(0, n)` draws it: 32-bit outputs masked to
    /// the smallest all-ones mask covering n − 1, rejected while above n − 1.
    public mutating func next(below n: Int) -> Int {
        let range = UInt32(n - 1)
        if range == 0 { return 0 }
        var mask = range
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16
        while true {
            let v = next() & mask
            if v <= range { return Int(v) }
        }
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_B0DF)
        }
        index = 0
    }
}
