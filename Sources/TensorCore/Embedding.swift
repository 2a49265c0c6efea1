/// `out (N, C)`: row n is `table[ids[n]]` (token embedding: `wte`; positional: `wpe` with
/// `ids[b·T + t] = t`).
public func embeddingForward(out: FloatPointer, ids: [Int], table: ConstFloatPointer, C: Int) {
    for (n, id) in ids.enumerated() { (out + n * C).update(from: table + id * C, count: C) }
}

/// Backward of `embeddingForward`: `dtable[ids[n]] += dout[n]` (repeated ids accumulate).
public func embeddingBackward(dtable: FloatPointer, dout: ConstFloatPointer, ids: [Int], C: Int) {
    for (n, id) in ids.enumerated() {
        let row = dtable + id * C, g = dout + n * C
        for c in 0..<C { row[c] += g[c] }
    }
}
