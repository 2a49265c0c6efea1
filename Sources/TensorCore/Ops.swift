import Foundation

// Forward kernels of the transformer, each over flat row-major buffers. Letters as in llm.c:
// B batch, T positions, C channels (d_model), NH heads, dh = C / NH; N = B·T rows.

/// `out (rows, cols) = x (rows, inner) · w (inner, cols) + bias (cols)`, one sgemm.
public func matmulBias(_ x: [Float], _ w: [Float], _ bias: [Float], rows: Int, inner: Int, cols: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    out.withUnsafeMutableBufferPointer { o in
        bias.withUnsafeBufferPointer { b in
            for r in 0..<rows { (o.baseAddress! + r * cols).update(from: b.baseAddress!, count: cols) }
        }
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                sgemm(M: rows, N: cols, K: inner, A: xp.baseAddress!, lda: inner, B: wp.baseAddress!, ldb: cols,
                      beta: 1, C: o.baseAddress!, ldc: cols)
            }
        }
    }
    return out
}

/// Causal attention scores `(B, NH, T, T) = alpha · q kᵀ`, future keys set to -inf.
/// `qkv` is `(N, 3C)`: queries, keys, values side by side, one head's dh columns contiguous.
public func attentionScores(qkv: [Float], scores: inout [Float], B: Int, T: Int, C: Int, NH: Int, dh: Int,
                            alpha: Float) {
    qkv.withUnsafeBufferPointer { p in
        scores.withUnsafeMutableBufferPointer { s in
            for b in 0..<B {
                for h in 0..<NH {
                    let q = p.baseAddress! + b * T * 3 * C + h * dh
                    let k = q + C
                    let out = s.baseAddress! + (b * NH + h) * T * T
                    sgemm(transB: true, M: T, N: T, K: dh, alpha: alpha, A: q, lda: 3 * C, B: k, ldb: 3 * C,
                          C: out, ldc: T)
                    for i in 0..<T { for j in (i + 1)..<max(T, i + 1) { out[i * T + j] = -.infinity } }
                }
            }
        }
    }
}

/// Softmax over the last axis of `(rows, cols)`; rows that are all -inf give zeros (as TransformerLens).
public func softmaxRows(_ x: [Float], rows: Int, cols: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    x.withUnsafeBufferPointer { xp in
        out.withUnsafeMutableBufferPointer { o in
            for r in 0..<rows {
                let row = xp.baseAddress! + r * cols
                var m = -Float.infinity
                for j in 0..<cols where row[j] > m { m = row[j] }
                if m == -.infinity { continue }
                var sum: Float = 0
                for j in 0..<cols {
                    // Masked (-inf) entries stay 0 without an expf: half of a causal pattern.
                    if row[j] == -.infinity { continue }
                    let e = expf(row[j] - m)
                    o[r * cols + j] = e
                    sum += e
                }
                let inv = 1 / sum
                for j in 0..<cols { o[r * cols + j] *= inv }
            }
        }
    }
    return out
}

/// `z (N, C)`: head h's columns are `pattern[b, h] (T, T) · v_h (T, dh)`.
public func attentionValues(pattern: [Float], qkv: [Float], z: inout [Float], B: Int, T: Int, C: Int, NH: Int,
                            dh: Int) {
    pattern.withUnsafeBufferPointer { pp in
        qkv.withUnsafeBufferPointer { p in
            z.withUnsafeMutableBufferPointer { zp in
                for b in 0..<B {
                    for h in 0..<NH {
                        let v = p.baseAddress! + b * T * 3 * C + 2 * C + h * dh
                        let a = pp.baseAddress! + (b * NH + h) * T * T
                        sgemm(M: T, N: dh, K: T, A: a, lda: T, B: v, ldb: 3 * C,
                              C: zp.baseAddress! + b * T * C + h * dh, ldc: C)
                    }
                }
            }
        }
    }
}

/// Per-head attention output without b_O, `(N, NH, C)`: `z_h (N, dh) · W_O[h] (dh, C)`.
public func headResults(z: [Float], wO: [Float], N: Int, C: Int, NH: Int, dh: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * NH * C)
    z.withUnsafeBufferPointer { zp in
        wO.withUnsafeBufferPointer { wp in
            out.withUnsafeMutableBufferPointer { o in
                for h in 0..<NH {
                    sgemm(M: N, N: C, K: dh, A: zp.baseAddress! + h * dh, lda: C, B: wp.baseAddress! + h * dh * C,
                          ldb: C, C: o.baseAddress! + h * C, ldc: NH * C)
                }
            }
        }
    }
    return out
}

/// GPT-2's tanh approximation of GELU (`gelu_new`), split over the cores.
///
/// Computed as `x / (1 + exp(-2u))`, the same function since `(1 + tanh u) / 2 = 1 / (1 + e^{-2u})`:
/// glibc's `expf` is about 6× faster than its `tanhf` (2.5 vs 15 ns), and GELU was the largest
/// cost of the forward pass after the matrix products.
public func geluNew(_ x: [Float]) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    let k = Float((2.0 / Double.pi).squareRoot())
    let n = x.count
    let chunks = n >= 1 << 16 ? ProcessInfo.processInfo.activeProcessorCount : 1
    x.withUnsafeBufferPointer { xp in
        out.withUnsafeMutableBufferPointer { o in
            let src = UnsafeSendable(xp.baseAddress!), dst = UnsafeSendable(o.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let lo = n * chunk / chunks, hi = n * (chunk + 1) / chunks
                let src = src.value, dst = dst.value
                for i in lo..<hi {
                    let v = src[i]
                    dst[i] = v / (1 + expf(-2 * k * (v + 0.044715 * v * v * v)))
                }
            }
        }
    }
    return out
}

/// Hands a raw pointer to parallel workers that write disjoint ranges.
public struct UnsafeSendable<P>: @unchecked Sendable {
    public let value: P
    public init(_ value: P) { self.value = value }
}
