import Foundation

// Causal self-attention over `qkv (N, 3C)`: queries, keys and values side by side, each head's
// dh columns contiguous inside its part (column `part·C + h·dh + e`), as GPT-2's c_attn writes
// them. `att (B, NH, T, T)` holds scores, then the pattern.

/// One sequence of an attention batch: query rows `row ..< row + rows` of `qkv`, at positions
/// `start ..< start + rows` of their prompt. The keys and values of the positions before `start`
/// are read from `prefix` (`(start, 3C)`, laid out as `qkv`: an earlier pass's rows of the same
/// prompt, which patching reuses), so the rows attend to `keys = start + rows` positions. The
/// sequence's scores are `(NH, rows, keys)` at offset `att` of the scores buffer.
public struct AttentionSegment {
    public let row: Int
    public let rows: Int
    public let start: Int
    public let prefix: ConstFloatPointer?
    public let att: Int
    public var keys: Int { start + rows }

    /// Segments of `(rows, start, prefix)` in row order, their scores one after another.
    public static func packed(_ parts: [(rows: Int, start: Int, prefix: ConstFloatPointer?)], NH: Int) -> [AttentionSegment] {
        var row = 0, att = 0
        return parts.map { p in
            precondition(p.start == 0 || p.prefix != nil, "a segment starting at \(p.start) needs its prefix")
            defer { row += p.rows; att += NH * p.rows * (p.start + p.rows) }
            return AttentionSegment(row: row, rows: p.rows, start: p.start, prefix: p.prefix, att: att)
        }
    }

    /// B sequences of T rows, no prefix: the scores as `(B, NH, T, T)`.
    public static func batch(B: Int, T: Int, NH: Int) -> [AttentionSegment] {
        packed(Array(repeating: (T, 0, nil), count: B), NH: NH)
    }

    /// Floats of the scores of `segments`.
    public static func scoresSize(_ segments: [AttentionSegment], NH: Int) -> Int {
        segments.reduce(0) { $0 + NH * $1.rows * $1.keys }
    }
}

/// Scores of each segment, `(NH, rows, keys) = alpha · q_h k_hᵀ` over the prefix's keys and then
/// the rows' own; the causal mask: a row at position p sees keys ≤ p, later ones are −inf.
public func attentionScoresForward(att: FloatPointer, qkv: ConstFloatPointer, segments: [AttentionSegment], C: Int, NH: Int,
                                   alpha: Float) {
    let dh = C / NH
    for s in segments {
        for h in 0..<NH {
            let q = qkv + s.row * 3 * C + h * dh
            let out = att + s.att + h * s.rows * s.keys
            if let prefix = s.prefix, s.start > 0 {
                sgemm(transB: true, M: s.rows, N: s.start, K: dh, alpha: alpha, A: q, lda: 3 * C, B: prefix + C + h * dh,
                      ldb: 3 * C, C: out, ldc: s.keys)
            }
            sgemm(transB: true, M: s.rows, N: s.rows, K: dh, alpha: alpha, A: q, lda: 3 * C, B: q + C, ldb: 3 * C,
                  C: out + s.start, ldc: s.keys)
            for i in 0..<s.rows {
                for j in (s.start + i + 1)..<max(s.keys, s.start + i + 1) { out[i * s.keys + j] = -.infinity }
            }
        }
    }
}

/// `att (B, NH, T, T) = alpha · q_h k_hᵀ` with future keys (j > i) set to −inf.
public func attentionScoresForward(att: FloatPointer, qkv: ConstFloatPointer, B: Int, T: Int, C: Int, NH: Int,
                                   alpha: Float) {
    attentionScoresForward(att: att, qkv: qkv, segments: AttentionSegment.batch(B: B, T: T, NH: NH), C: C, NH: NH, alpha: alpha)
}

/// The pattern: each segment's scores softmaxed over its keys, in place.
public func attentionSoftmaxForward(att: FloatPointer, segments: [AttentionSegment], NH: Int) {
    for s in segments { softmaxForward(out: att + s.att, x: att + s.att, rows: NH * s.rows, cols: s.keys) }
}

/// One attention row recomputed with a query or keys swapped (patching a query or key, AtP*'s QK
/// fix): `softmax_s(alpha · query · key(s))` over the keys `s = 0 ..< count` (the row's own
/// position is `count − 1`), in Float with the forward's softmax.
public func attentionRow(query: ConstFloatPointer, keys key: (Int) -> ConstFloatPointer, count: Int, dh: Int,
                         alpha: Float) -> [Float] {
    var row = [Float](repeating: 0, count: count)
    for s in 0..<count {
        let k = key(s)
        var dot: Float = 0
        for e in 0..<dh { dot += query[e] * k[e] }
        row[s] = alpha * dot
    }
    row.withUnsafeMutableBufferPointer { softmaxForward(out: $0.baseAddress!, x: $0.baseAddress!, rows: 1, cols: count) }
    return row
}

/// Backward of `attentionScoresForward`, accumulating into the q and k parts of `dqkv (N, 3C)`:
/// `dq_h += alpha · datt · k_h`, `dk_h += alpha · dattᵀ · q_h`.
public func attentionScoresBackward(dqkv: FloatPointer, datt: ConstFloatPointer, qkv: ConstFloatPointer,
                                    B: Int, T: Int, C: Int, NH: Int, alpha: Float) {
    let dh = C / NH
    for b in 0..<B {
        for h in 0..<NH {
            let offset = b * T * 3 * C + h * dh
            let g = datt + (b * NH + h) * T * T
            sgemm(M: T, N: dh, K: T, alpha: alpha, A: g, lda: T, B: qkv + offset + C, ldb: 3 * C, beta: 1,
                  C: dqkv + offset, ldc: 3 * C)
            sgemm(transA: true, M: T, N: dh, K: T, alpha: alpha, A: g, lda: T, B: qkv + offset, ldb: 3 * C, beta: 1,
                  C: dqkv + offset + C, ldc: 3 * C)
        }
    }
}

/// Softmax over the last axis of `x (rows, cols)` into `out` (which may be `x`). Masked (−inf)
/// entries give 0 without an `expf`; a row that is all −inf gives zeros (as TransformerLens).
public func softmaxForward(out: FloatPointer, x: ConstFloatPointer, rows: Int, cols: Int) {
    // Rows are independent: split over the cores when there is enough work (every row is
    // computed exactly as alone).
    parallelChunks(rows, minimum: max(1, (1 << 15) / max(cols, 1))) { lo, hi in
        for r in lo..<hi {
            let row = x + r * cols, o = out + r * cols
            var m = -Float.infinity
            for j in 0..<cols where row[j] > m { m = row[j] }
            if m == -.infinity {
                o.update(repeating: 0, count: cols)
                continue
            }
            var sum: Float = 0
            for j in 0..<cols {
                let e: Float = row[j] == -.infinity ? 0 : expf(row[j] - m)
                o[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0..<cols { o[j] *= inv }
        }
    }
}

public func softmaxBackward(dx: FloatPointer, dp: ConstFloatPointer, p: ConstFloatPointer, rows: Int, cols: Int) {
    parallelChunks(rows, minimum: max(1, (1 << 15) / max(cols, 1))) { lo, hi in
        for r in lo..<hi {
            let pr = p + r * cols, g = dp + r * cols, o = dx + r * cols
            var dot: Float = 0
            for j in 0..<cols { dot += pr[j] * g[j] }
            for j in 0..<cols { o[j] = pr[j] * (g[j] - dot) }
        }
    }
}

/// `z (N, C)`: head h's columns of each segment's rows are its pattern `(rows, keys)` times the
/// values of its keys, the prefix's then the rows' own.
public func attentionValuesForward(z: FloatPointer, pattern: ConstFloatPointer, qkv: ConstFloatPointer,
                                   segments: [AttentionSegment], C: Int, NH: Int) {
    let dh = C / NH
    for s in segments {
        for h in 0..<NH {
            let p = pattern + s.att + h * s.rows * s.keys, out = z + s.row * C + h * dh
            var beta: Float = 0
            if let prefix = s.prefix, s.start > 0 {
                sgemm(M: s.rows, N: dh, K: s.start, A: p, lda: s.keys, B: prefix + 2 * C + h * dh, ldb: 3 * C, C: out, ldc: C)
                beta = 1
            }
            sgemm(M: s.rows, N: dh, K: s.rows, A: p + s.start, lda: s.keys, B: qkv + s.row * 3 * C + 2 * C + h * dh, ldb: 3 * C,
                  beta: beta, C: out, ldc: C)
        }
    }
}

/// `z (N, C)`: head h's columns are `pattern[b, h] (T, T) · v_h (T, dh)`.
public func attentionValuesForward(z: FloatPointer, pattern: ConstFloatPointer, qkv: ConstFloatPointer,
                                   B: Int, T: Int, C: Int, NH: Int) {
    attentionValuesForward(z: z, pattern: pattern, qkv: qkv, segments: AttentionSegment.batch(B: B, T: T, NH: NH), C: C, NH: NH)
}

/// Backward of `attentionValuesForward`: `dpattern (B, NH, T, T) = dz_h · v_hᵀ` (every entry, the
/// masked ones too: that is the gradient at `hook_pattern`), and `dv_h += patternᵀ · dz_h` into
/// the v part of `dqkv`.
public func attentionValuesBackward(dpattern: FloatPointer, dqkv: FloatPointer, dz: ConstFloatPointer,
                                    pattern: ConstFloatPointer, qkv: ConstFloatPointer,
                                    B: Int, T: Int, C: Int, NH: Int) {
    let dh = C / NH
    for b in 0..<B {
        for h in 0..<NH {
            let att = (b * NH + h) * T * T
            let g = dz + b * T * C + h * dh
            let v = b * T * 3 * C + 2 * C + h * dh
            sgemm(transB: true, M: T, N: T, K: dh, A: g, lda: C, B: qkv + v, ldb: 3 * C, C: dpattern + att, ldc: T)
            sgemm(transA: true, M: T, N: dh, K: T, A: pattern + att, lda: T, B: g, ldb: C, beta: 1, C: dqkv + v, ldc: 3 * C)
        }
    }
}
