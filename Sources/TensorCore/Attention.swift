import Foundation

// Causal self-attention over `qkv (N, 3C)`: queries, keys and values side by side, each head's
// dh columns contiguous inside its part (column `part·C + h·dh + e`), as GPT-2's c_attn writes
// them. `att (B, NH, T, T)` holds scores, then the pattern.

/// `att (B, NH, T, T) = alpha · q_h k_hᵀ` with future keys (j > i) set to −inf.
public func attentionScoresForward(att: FloatPointer, qkv: ConstFloatPointer, B: Int, T: Int, C: Int, NH: Int,
                                   alpha: Float) {
    let dh = C / NH
    for b in 0..<B {
        for h in 0..<NH {
            let q = qkv + b * T * 3 * C + h * dh, k = q + C
            let out = att + (b * NH + h) * T * T
            sgemm(transB: true, M: T, N: T, K: dh, alpha: alpha, A: q, lda: 3 * C, B: k, ldb: 3 * C, C: out, ldc: T)
            for i in 0..<T { for j in (i + 1)..<max(T, i + 1) { out[i * T + j] = -.infinity } }
        }
    }
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
    for r in 0..<rows {
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

/// Backward of `softmaxForward`: `dx = p ⊙ (dp − Σ_j p_j dp_j)` per row, written to `dx` (which may be `dp`).
public func softmaxBackward(dx: FloatPointer, dp: ConstFloatPointer, p: ConstFloatPointer, rows: Int, cols: Int) {
    for r in 0..<rows {
        let pr = p + r * cols, g = dp + r * cols, o = dx + r * cols
        var dot: Float = 0
        for j in 0..<cols { dot += pr[j] * g[j] }
        for j in 0..<cols { o[j] = pr[j] * (g[j] - dot) }
    }
}

/// `z (N, C)`: head h's columns are `pattern[b, h] (T, T) · v_h (T, dh)`.
public func attentionValuesForward(z: FloatPointer, pattern: ConstFloatPointer, qkv: ConstFloatPointer,
                                   B: Int, T: Int, C: Int, NH: Int) {
    let dh = C / NH
    for b in 0..<B {
        for h in 0..<NH {
            sgemm(M: T, N: dh, K: T, A: pattern + (b * NH + h) * T * T, lda: T,
                  B: qkv + b * T * 3 * C + 2 * C + h * dh, ldb: 3 * C, C: z + b * T * C + h * dh, ldc: C)
        }
    }
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
