import Foundation

// Matrix products of the transformer, over flat row-major buffers. Letters as in llm.c, defined
// once here: B batch, T positions, C channels (d_model), NH heads, dh = C / NH, M = d_mlp,
// V vocabulary, N = B·T rows. Weights are GPT-2's Conv1D layout, (in, out).

/// `out (N, OC) = inp (N, IC) · w (IC, OC) + bias (OC)`. `ldw` and `ldout` are row strides of `w`
/// and `out` (a column slice of a wider matrix, as Q|K|V of `c_attn`); `bias` may be nil.
public func matmulForward(
    out: FloatPointer, inp: ConstFloatPointer, w: ConstFloatPointer, bias: ConstFloatPointer?,
    N: Int, IC: Int, OC: Int, ldw: Int? = nil, ldout: Int? = nil
) {
    let ldw = ldw ?? OC, ldout = ldout ?? OC
    if let bias {
        for n in 0..<N { (out + n * ldout).update(from: bias, count: OC) }
    }
    sgemm(M: N, N: OC, K: IC, A: inp, lda: IC, B: w, ldb: ldw, beta: bias == nil ? 0 : 1, C: out, ldc: ldout)
}

/// Backward of `matmulForward`, accumulating: `dinp (N, IC) += dout · wᵀ`,
/// `dw (IC, OC) += inpᵀ · dout`, `dbias (OC) += Σ_n dout`. Any of the three may be nil (not needed).
public func matmulBackward(
    dinp: FloatPointer?, dw: FloatPointer?, dbias: FloatPointer?,
    dout: ConstFloatPointer, inp: ConstFloatPointer, w: ConstFloatPointer,
    N: Int, IC: Int, OC: Int, ldw: Int? = nil, lddout: Int? = nil
) {
    let ldw = ldw ?? OC, lddout = lddout ?? OC
    if let dinp {
        sgemm(transB: true, M: N, N: IC, K: OC, A: dout, lda: lddout, B: w, ldb: ldw, beta: 1, C: dinp, ldc: IC)
    }
    if let dw {
        sgemm(transA: true, M: IC, N: OC, K: N, A: inp, lda: IC, B: dout, ldb: lddout, beta: 1, C: dw, ldc: ldw)
    }
    if let dbias {
        for n in 0..<N {
            let row = dout + n * lddout
            for o in 0..<OC { dbias[o] += row[o] }
        }
    }
}

/// `logits (R, V) = x (R, C) · W_Uᵀ + b_U (V)`, with W_U stored (V, C) (row v is the unembedding
/// of token v, as `wte` — so a tied unembedding is `wte` itself).
public func unembedForward(logits: FloatPointer, x: ConstFloatPointer, wU: ConstFloatPointer, bU: ConstFloatPointer,
                           R: Int, C: Int, V: Int) {
    for r in 0..<R { (logits + r * V).update(from: bU, count: V) }
    sgemm(transB: true, M: R, N: V, K: C, A: x, lda: C, B: wU, ldb: C, beta: 1, C: logits, ldc: V)
}

/// Backward of `unembedForward`, accumulating: `dx (R, C) += dlogits · W_U`,
/// `dW_U (V, C) += dlogitsᵀ · x`, `db_U += Σ_r dlogits`. Any output may be nil.
public func unembedBackward(dx: FloatPointer?, dwU: FloatPointer?, dbU: FloatPointer?, dlogits: ConstFloatPointer,
                            x: ConstFloatPointer, wU: ConstFloatPointer, R: Int, C: Int, V: Int) {
    if let dx {
        // A logit metric's gradient is a few logits per row (the answer's, the wrong one's): dx is
        // those rows of W_U, weighted, without reading the rest of W_U (GPT-2's is 154 MB).
        if let sparse = sparseRows(dlogits, R: R, V: V, limit: 16) {
            for (r, entries) in sparse.enumerated() {
                for (v, d) in entries { for c in 0..<C { dx[r * C + c] += d * wU[v * C + c] } }
            }
        } else {
            sgemm(M: R, N: C, K: V, A: dlogits, lda: V, B: wU, ldb: C, beta: 1, C: dx, ldc: C)
        }
    }
    if let dwU { sgemm(transA: true, M: V, N: C, K: R, A: dlogits, lda: V, B: x, ldb: C, beta: 1, C: dwU, ldc: C) }
    if let dbU {
        // Columns split over the cores; each column still sums its rows in order.
        parallelChunks(V, minimum: R * V >= 1 << 20 ? 2 : V + 1) { lo, hi in
            for r in 0..<R {
                let row = dlogits + r * V
                for v in lo..<hi { dbU[v] += row[v] }
            }
        }
    }
}

/// The nonzero entries (column, value) of each row of `d (R, V)`, in column order; nil as soon as
/// a row has more than `limit` of them.
func sparseRows(_ d: ConstFloatPointer, R: Int, V: Int, limit: Int) -> [[(Int, Float)]]? {
    var out: [[(Int, Float)]] = []
    for r in 0..<R {
        var entries: [(Int, Float)] = []
        for v in 0..<V where d[r * V + v] != 0 {
            if entries.count == limit { return nil }
            entries.append((v, d[r * V + v]))
        }
        out.append(entries)
    }
    return out
}

/// `logits (R, V) = x[rows] · W_Uᵀ + b_U`: the unembedding of rows `rows` of `x (N, C)` (the
/// positions that get logits), gathered when they are not consecutive.
public func unembedRowsForward(logits: FloatPointer, x: ConstFloatPointer, rows: [Int], wU: ConstFloatPointer,
                               bU: ConstFloatPointer, C: Int, V: Int) {
    guard let first = rows.first else { return }
    if rows.elementsEqual(first..<(first + rows.count)) {
        unembedForward(logits: logits, x: x + first * C, wU: wU, bU: bU, R: rows.count, C: C, V: V)
        return
    }
    let gathered = gatherRows(x, rows, C: C)
    unembedForward(logits: logits, x: gathered, wU: wU, bU: bU, R: rows.count, C: C, V: V)
}

/// Backward of `unembedRowsForward`, accumulating: `dx[rows] += dlogits · W_U` (scattered back),
/// `dW_U += dlogitsᵀ · x[rows]`, `db_U += Σ_r dlogits`. Any output may be nil.
public func unembedRowsBackward(dx: FloatPointer?, dwU: FloatPointer?, dbU: FloatPointer?, dlogits: ConstFloatPointer,
                                x: ConstFloatPointer, rows: [Int], wU: ConstFloatPointer, C: Int, V: Int) {
    guard let first = rows.first else { return }
    if rows.elementsEqual(first..<(first + rows.count)) {
        unembedBackward(dx: dx.map { $0 + first * C }, dwU: dwU, dbU: dbU, dlogits: dlogits, x: x + first * C, wU: wU,
                        R: rows.count, C: C, V: V)
        return
    }
    let gathered = gatherRows(x, rows, C: C)
    var dGathered = [Float](repeating: 0, count: dx == nil ? 0 : rows.count * C)
    dGathered.withUnsafeMutableBufferPointer { d in
        unembedBackward(dx: dx == nil ? nil : d.baseAddress, dwU: dwU, dbU: dbU, dlogits: dlogits, x: gathered, wU: wU,
                        R: rows.count, C: C, V: V)
    }
    if let dx {
        for (i, r) in rows.enumerated() { for c in 0..<C { dx[r * C + c] += dGathered[i * C + c] } }
    }
}

/// Rows `rows` of `x (N, C)`, in that order.
public func gatherRows(_ x: ConstFloatPointer, _ rows: [Int], C: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows.count * C)
    out.withUnsafeMutableBufferPointer { o in
        for (i, r) in rows.enumerated() { (o.baseAddress! + i * C).update(from: x + r * C, count: C) }
    }
    return out
}

/// Per-head attention output without b_O: `result (N, NH, C)`, head h's rows `z_h (N, dh) · W_O[h] (dh, C)`
/// where `W_O[h]` is rows `h·dh ..< (h+1)·dh` of `wO (C, C)`.
public func headOutputForward(result: FloatPointer, z: ConstFloatPointer, wO: ConstFloatPointer,
                              N: Int, C: Int, NH: Int) {
    let dh = C / NH
    for h in 0..<NH {
        sgemm(M: N, N: C, K: dh, A: z + h * dh, lda: C, B: wO + h * dh * C, ldb: C, C: result + h * C, ldc: NH * C)
    }
}

/// `attnOut (N, C) = b_O + Σ_h result[:, h]`: the sum of `headOutputForward`'s heads.
public func headSumForward(out: FloatPointer, result: ConstFloatPointer, bO: ConstFloatPointer, N: Int, C: Int, NH: Int) {
    for n in 0..<N {
        let o = out + n * C
        o.update(from: bO, count: C)
        for h in 0..<NH {
            let src = result + (n * NH + h) * C
            for c in 0..<C { o[c] += src[c] }
        }
    }
}

/// Backward of `headOutputForward`, accumulating: `dz (N, C) += dresult_h · W_O[h]ᵀ` per head,
/// `dwO += z_hᵀ · dresult_h`. Either output may be nil.
public func headOutputBackward(dz: FloatPointer?, dwO: FloatPointer?, dresult: ConstFloatPointer, z: ConstFloatPointer,
                               wO: ConstFloatPointer, N: Int, C: Int, NH: Int) {
    let dh = C / NH
    for h in 0..<NH {
        if let dz {
            sgemm(transB: true, M: N, N: dh, K: C, A: dresult + h * C, lda: NH * C, B: wO + h * dh * C, ldb: C,
                  beta: 1, C: dz + h * dh, ldc: C)
        }
        if let dwO {
            sgemm(transA: true, M: dh, N: C, K: N, A: z + h * dh, lda: C, B: dresult + h * C, ldb: NH * C,
                  beta: 1, C: dwO + h * dh * C, ldc: C)
        }
    }
}

/// `out (N, NH, C)[n, h] = x (N, C)[n]` for every head h: the gradient each head's output
/// receives from the sum over heads.
public func broadcastHeads(into out: FloatPointer, from x: ConstFloatPointer, N: Int, C: Int, NH: Int) {
    for n in 0..<N {
        for h in 0..<NH { (out + (n * NH + h) * C).update(from: x + n * C, count: C) }
    }
}

/// `out = a + b` over `n` floats (a residual connection; its backward passes `dout` to both).
public func residualForward(out: FloatPointer, a: ConstFloatPointer, b: ConstFloatPointer, n: Int) {
    for i in 0..<n { out[i] = a[i] + b[i] }
}
