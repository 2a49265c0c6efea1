import Foundation

/// Logit difference at the last position: per prompt `logits[b, answer_b] − logits[b, wrong_b]`
/// (or just `logits[b, answer_b]` without `wrong`), from `logits (B, V)` — each row the last
/// position of one prompt. The scalar a backward pass starts from is their sum, so each prompt's
/// gradients are its own; `dlogits (B, V)` receives ±`scale` at the two ids (accumulating).
public func logitDifferenceForward(logits: ConstFloatPointer, answer: [Int], wrong: [Int]?, V: Int) -> [Double] {
    answer.indices.map { b in
        Double(logits[b * V + answer[b]]) - (wrong.map { Double(logits[b * V + $0[b]]) } ?? 0)
    }
}

public func logitDifferenceBackward(dlogits: FloatPointer, answer: [Int], wrong: [Int]?, V: Int, scale: Float = 1) {
    for b in answer.indices {
        dlogits[b * V + answer[b]] += scale
        if let wrong { dlogits[b * V + wrong[b]] -= scale }
    }
}

/// Mean next-token cross-entropy over the prompts' positions, as transformers computes it with
/// `labels=input_ids`: position t of prompt b predicts token t + 1, over the B·(T − 1) pairs.
/// `logits (B·T, V)` every position. Returns the mean loss and the per-prompt means. With
/// `dlogits`, also its gradient, accumulated: `(softmax − onehot(token_{t+1})) · scale / (B·(T − 1))`
/// for t < T − 1 (the last position predicts nothing). With `ignoreTarget`, the pairs whose target
/// is that id leave the loss, as labels −100 do in transformers: the means (and the gradient's
/// divisor) count the other pairs only (a prompt with none has loss 0; all ignored: NaN).
public func crossEntropy(logits: ConstFloatPointer, tokens: [[Int]], V: Int, dlogits: FloatPointer? = nil,
                         scale: Float = 1, ignoreTarget: Int? = nil) -> (mean: Double, perPrompt: [Double]) {
    let B = tokens.count, T = tokens[0].count
    guard T > 1 else { return (.nan, Array(repeating: .nan, count: B)) }
    let rows = B * (T - 1)
    func counted(_ r: Int) -> Bool { tokens[r / (T - 1)][r % (T - 1) + 1] != ignoreTarget }
    let countedRows = ignoreTarget == nil ? rows : (0..<rows).filter(counted).count
    let k = scale / Float(max(countedRows, 1))
    var losses = [Double](repeating: 0, count: rows)
    losses.withUnsafeMutableBufferPointer { lossPointer in
        let out = lossPointer.baseAddress!
        parallelChunks(rows, minimum: 2) { lo, hi in
            let e = FloatPointer.allocate(capacity: V)
            defer { e.deallocate() }
            for r in lo..<hi where counted(r) {
                let b = r / (T - 1), t = r % (T - 1)
                let row = logits + (b * T + t) * V
                let target = tokens[b][t + 1]
                let m = maxFloats(row, count: V)
                // exp(row − max) once, kept for the gradient; the normaliser summed in Double (a
                // Float sum over 50 000 terms drifts by ~1e-4).
                let sum = expShifted(out: e, x: row, shift: m, count: V)
                out[r] = Double(m) + log(sum) - Double(row[target])
                if let dlogits {
                    let g = dlogits + (b * T + t) * V
                    let inv = Float(Double(k) / sum)
                    for v in 0..<V { g[v] += e[v] * inv }
                    g[target] -= k
                }
            }
        }
    }
    var per = [Double](repeating: 0, count: B), perCount = [Int](repeating: 0, count: B)
    for r in 0..<rows where counted(r) {
        per[r / (T - 1)] += losses[r]
        perCount[r / (T - 1)] += 1
    }
    let total = per.reduce(0, +)
    per = zip(per, perCount).map { $1 == 0 ? 0 : $0 / Double($1) }
    guard countedRows < rows else { return (per.reduce(0, +) / Double(B), per) }
    return (countedRows == 0 ? .nan : total / Double(countedRows), per)
}
