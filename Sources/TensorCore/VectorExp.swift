import Foundation

/// `out[i] = exp(x[i] − shift)` for `count` floats, returning their sum (in Double over blocks of
/// Float partial sums). Cephes' `expf`: range reduction by ln 2 in two parts, a degree-6
/// polynomial, 2ⁿ through the exponent bits (n found by the 1.5·2²³ rounding trick). Within
/// 2 ulp of the true value on [−87, 88]; written as a plain loop without calls or branches so
/// that the compiler vectorises it: 2–3× glibc's `expf` per element — the softmax over GPT-2's
/// 50 257 tokens is most of a training step outside the matrix products. Arguments below −87.3
/// give about 1e-38 instead of less.
public func expShifted(out: FloatPointer, x: ConstFloatPointer, shift: Float, count: Int) -> Double {
    var total = 0.0
    var start = 0
    while start < count {
        let end = min(count, start + 512)
        for i in start..<end { out[i] = vectorExp(x[i] - shift) }
        total += Double(sumFloats(out + start, count: end - start))
        start = end
    }
    return total
}

/// Cephes' `expf` of one float (see `expShifted`), branch-free so that a loop calling it
/// vectorises. Arguments are clamped to [−87.3, 88.7].
@inline(__always)
public func vectorExp(_ x: Float) -> Float {
    let log2e: Float = 1.442_695_04, c1: Float = 0.693_359_375, c2: Float = -2.121_944_4e-4
    let p0: Float = 1.987_569_15e-4, p1: Float = 1.398_199_95e-3, p2: Float = 8.333_451_9e-3
    let p3: Float = 4.166_579_59e-2, p4: Float = 1.666_666_55e-1, p5: Float = 5.000_000_12e-1
    let magic: Float = 12_582_912
    let v = Swift.min(Swift.max(x, -87.3), 88.7)
    let t = v * log2e + magic
    let n = t - magic
    let r = v - n * c1 - n * c2
    var p = p0 * r + p1
    p = p * r + p2
    p = p * r + p3
    p = p * r + p4
    p = p * r + p5
    p = p * (r * r) + r + 1
    return p * Float(bitPattern: (t.bitPattern &- magic.bitPattern &+ 127) &<< 23)
}

/// Sum of `count` floats in eight interleaved partial sums (vectorisable; the order of additions
/// is fixed, so the result is too).
@inline(__always)
public func sumFloats(_ x: ConstFloatPointer, count: Int) -> Float {
    var lanes = SIMD8<Float>()
    var j = 0
    let raw = UnsafeRawPointer(x)
    while j + 8 <= count {
        lanes += raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
        j += 8
    }
    var s = lanes.sum()
    while j < count { s += x[j]; j += 1 }
    return s
}

/// Largest of `count` floats (−∞ for none), in eight interleaved lanes.
@inline(__always)
public func maxFloats(_ x: ConstFloatPointer, count: Int) -> Float {
    var m0 = -Float.infinity, m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0
    var j = 0
    while j + 8 <= count {
        m0 = Swift.max(m0, x[j]); m1 = Swift.max(m1, x[j + 1]); m2 = Swift.max(m2, x[j + 2]); m3 = Swift.max(m3, x[j + 3])
        m4 = Swift.max(m4, x[j + 4]); m5 = Swift.max(m5, x[j + 5]); m6 = Swift.max(m6, x[j + 6]); m7 = Swift.max(m7, x[j + 7])
        j += 8
    }
    var m = Swift.max(Swift.max(Swift.max(m0, m1), Swift.max(m2, m3)), Swift.max(Swift.max(m4, m5), Swift.max(m6, m7)))
    while j < count { m = Swift.max(m, x[j]); j += 1 }
    return m
}
