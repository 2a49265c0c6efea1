import Foundation
import Testing
import TensorCore

/// Every kernel's forward against the naive Double reference, and every backward against central
/// finite differences of that reference, on small random inputs. Each test prints the largest
/// difference it saw.
@Suite struct KernelTests {
    /// Seeded uniform values in [-scale, scale].
    static func random(_ n: Int, seed: UInt64, scale: Double = 1) -> [Double] {
        var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<n).map { _ in
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return (Double(s % 2_000_001) / 1_000_000 - 1) * scale
        }
    }

    static func float(_ x: [Double]) -> [Float] { x.map(Float.init) }

    /// Largest |a − b| relative to max(1, max |b|).
    static func relativeError(_ a: [Float], _ b: [Double]) -> Double {
        let scale = max(1, b.map(abs).max() ?? 0)
        return zip(a, b).map { abs(Double($0) - $1) }.max()! / scale
    }

    static func check(_ name: String, _ got: [Float], _ want: [Double], tolerance: Double = 1e-4) {
        let err = relativeError(got, want)
        print("\(name): max relative |diff| \(err)")
        #expect(err <= tolerance, "\(name): \(err)")
    }

    /// Σ g · f(x): the scalar whose gradient a backward with upstream gradient g computes.
    static func dot(_ g: [Double], _ y: [Double]) -> Double { zip(g, y).reduce(0) { $0 + $1.0 * $1.1 } }

    @Test func matmulForwardAndBackward() {
        let (N, IC, OC) = (5, 7, 6)
        let x = Self.random(N * IC, seed: 1), w = Self.random(IC * OC, seed: 2), b = Self.random(OC, seed: 3)
        let g = Self.random(N * OC, seed: 4)
        var out = [Float](repeating: 0, count: N * OC)
        matmulForward(out: &out, inp: Self.float(x), w: Self.float(w), bias: Self.float(b), N: N, IC: IC, OC: OC)
        Self.check("matmul forward", out, Naive.matmul(x, w, b, N: N, IC: IC, OC: OC))
        var dx = [Float](repeating: 0, count: N * IC), dw = [Float](repeating: 0, count: IC * OC)
        var db = [Float](repeating: 0, count: OC)
        matmulBackward(dinp: &dx, dw: &dw, dbias: &db, dout: Self.float(g), inp: Self.float(x), w: Self.float(w),
                       N: N, IC: IC, OC: OC)
        Self.check("matmul dx", dx, Naive.gradient({ Self.dot(g, Naive.matmul($0, w, b, N: N, IC: IC, OC: OC)) }, at: x))
        Self.check("matmul dw", dw, Naive.gradient({ Self.dot(g, Naive.matmul(x, $0, b, N: N, IC: IC, OC: OC)) }, at: w))
        Self.check("matmul db", db, Naive.gradient({ Self.dot(g, Naive.matmul(x, w, $0, N: N, IC: IC, OC: OC)) }, at: b))
    }

    @Test func unembedForwardAndBackward() {
        let (R, C, V) = (3, 6, 11)
        let x = Self.random(R * C, seed: 5), wU = Self.random(V * C, seed: 6), bU = Self.random(V, seed: 7)
        let g = Self.random(R * V, seed: 8)
        var out = [Float](repeating: 0, count: R * V)
        unembedForward(logits: &out, x: Self.float(x), wU: Self.float(wU), bU: Self.float(bU), R: R, C: C, V: V)
        Self.check("unembed forward", out, Naive.unembed(x, wU, bU, R: R, C: C, V: V))
        var dx = [Float](repeating: 0, count: R * C), dw = [Float](repeating: 0, count: V * C), db = [Float](repeating: 0, count: V)
        unembedBackward(dx: &dx, dwU: &dw, dbU: &db, dlogits: Self.float(g), x: Self.float(x), wU: Self.float(wU), R: R, C: C, V: V)
        Self.check("unembed dx", dx, Naive.gradient({ Self.dot(g, Naive.unembed($0, wU, bU, R: R, C: C, V: V)) }, at: x))
        Self.check("unembed dwU", dw, Naive.gradient({ Self.dot(g, Naive.unembed(x, $0, bU, R: R, C: C, V: V)) }, at: wU))
        Self.check("unembed dbU", db, Naive.gradient({ Self.dot(g, Naive.unembed(x, wU, $0, R: R, C: C, V: V)) }, at: bU))
    }

    /// Both modes, with and without the affine part, the scale's gradient flowing or frozen.
    @Test(arguments: [LayerNormScale.standard(eps: 1e-5), .fixed(2.5)], [true, false])
    func layerNormForwardAndBackward(mode: LayerNormScale, affine: Bool) {
        let (N, C) = (4, 9)
        let x = Self.random(N * C, seed: 9, scale: 2), g = Self.random(N * C, seed: 10)
        let w = affine ? Self.random(C, seed: 11) : nil, b = affine ? Self.random(C, seed: 12) : nil
        var mean = [Float](repeating: 0, count: N), scale = mean, raw = mean
        var out = [Float](repeating: 0, count: N * C)
        let xf = Self.float(x), wf = w.map(Self.float), bf = b.map(Self.float)
        layerNormStats(mean: &mean, scale: &scale, rawScale: &raw, x: xf, N: N, C: C, mode: mode, rawEps: 1e-5)
        layerNormApply(out: &out, x: xf, mean: mean, scale: scale, w: wf, b: bf, N: N, C: C)
        Self.check("layernorm \(mode) forward", out, Naive.layerNorm(x, w: w, b: b, N: N, C: C, mode: mode))
        var dxhat = [Float](repeating: 0, count: N * C), dscale = [Float](repeating: 0, count: N)
        var dw = [Float](repeating: 0, count: C), db = dw, dx = [Float](repeating: 0, count: N * C)
        layerNormApplyBackward(dxhat: &dxhat, dscale: &dscale, dw: &dw, db: &db, dout: Self.float(g), x: xf, mean: mean,
                               scale: scale, w: wf, N: N, C: C)
        var depends = true
        if case .fixed = mode { depends = false }
        layerNormStatsBackward(dx: &dx, dxhat: dxhat, dscale: dscale, x: xf, mean: mean, scale: scale, rawScale: raw,
                               scaleDependsOnInput: depends, N: N, C: C)
        Self.check("layernorm \(mode) dx", dx, Naive.gradient({ Self.dot(g, Naive.layerNorm($0, w: w, b: b, N: N, C: C, mode: mode)) }, at: x))
        if let w, let b {
            Self.check("layernorm dw", dw, Naive.gradient({ Self.dot(g, Naive.layerNorm(x, w: $0, b: b, N: N, C: C, mode: mode)) }, at: w))
            Self.check("layernorm db", db, Naive.gradient({ Self.dot(g, Naive.layerNorm(x, w: w, b: $0, N: N, C: C, mode: mode)) }, at: b))
        }
        // The gradient at the scale: d/ds of Σ g · ((x − mean)/s · w + b), row by row.
        let meanD = (0..<N).map { n in x[(n * C)..<(n * C + C)].reduce(0, +) / Double(C) }
        let wantScale = (0..<N).map { n -> Double in
            let s = Double(scale[n])
            return -(0..<C).reduce(0) { $0 + g[n * C + $1] * (w?[$1] ?? 1) * (x[n * C + $1] - meanD[n]) / (s * s) }
        }
        Self.check("layernorm dscale", dscale, wantScale)
        // Frozen scale (the linearisation DLA uses): the scale's own gradient does not reach x.
        if case .standard = mode {
            var frozen = [Float](repeating: 0, count: N * C)
            layerNormStatsBackward(dx: &frozen, dxhat: dxhat, dscale: dscale, x: xf, mean: mean, scale: scale, rawScale: raw,
                                   scaleDependsOnInput: false, N: N, C: C)
            let fixedScales = scale.map(Double.init)
            let want = Naive.gradient({ x in
                var y = [Double](repeating: 0, count: N * C)
                for n in 0..<N {
                    let m = x[(n * C)..<(n * C + C)].reduce(0, +) / Double(C)
                    for c in 0..<C { y[n * C + c] = (x[n * C + c] - m) / fixedScales[n] * (w?[c] ?? 1) + (b?[c] ?? 0) }
                }
                return Self.dot(g, y)
            }, at: x)
            Self.check("layernorm frozen-scale dx", frozen, want)
        }
    }

    /// The raw scale's extra gradient (an auxiliary loss on σ).
    @Test func rawScaleBackwardMatchesDifferences() {
        let (N, C) = (3, 8)
        let x = Self.random(N * C, seed: 13, scale: 3), g = Self.random(N, seed: 14)
        var mean = [Float](repeating: 0, count: N), scale = mean, raw = mean
        layerNormStats(mean: &mean, scale: &scale, rawScale: &raw, x: Self.float(x), N: N, C: C, mode: .fixed(1), rawEps: 1e-5)
        var dx = [Float](repeating: 0, count: N * C)
        rawScaleBackward(dx: &dx, dRawScale: Self.float(g), x: Self.float(x), mean: mean, rawScale: raw, N: N, C: C)
        let want = Naive.gradient({ x in
            (0..<N).reduce(0) { acc, n in
                let row = x[(n * C)..<(n * C + C)], m = row.reduce(0, +) / Double(C)
                return acc + g[n] * (row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(C) + 1e-5).squareRoot()
            }
        }, at: x)
        Self.check("raw scale dx", dx, want)
    }

    @Test func geluForwardAndBackward() {
        let x = Self.random(257, seed: 15, scale: 4), g = Self.random(257, seed: 16)
        var out = [Float](repeating: 0, count: x.count), dx = out
        geluForward(out: &out, inp: Self.float(x), n: x.count)
        Self.check("gelu forward", out, Naive.gelu(x))
        geluBackward(dinp: &dx, dout: Self.float(g), inp: Self.float(x), n: x.count)
        Self.check("gelu dx", dx, Naive.gradient({ Self.dot(g, Naive.gelu($0)) }, at: x))
        // The parallel path (≥ 2^16 values) computes the same numbers.
        let big = Self.float(Self.random(1 << 17, seed: 17, scale: 4))
        var parallel = [Float](repeating: 0, count: big.count)
        geluForward(out: &parallel, inp: big, n: big.count)
        let k = Float((2.0 / Double.pi).squareRoot())
        #expect(zip(parallel, big).allSatisfy { $0 == $1 / (1 + vectorExp(-2 * k * ($1 + 0.044715 * $1 * $1 * $1))) })
    }

    /// The tangent of GELU at x0 against the Double reference `gelu(x0) + gelu'(x0)(x − x0)`, with
    /// gelu' by central differences of the naive GELU; its backward against finite differences.
    @Test func geluTangentForwardAndBackward() {
        let x = Self.random(257, seed: 18, scale: 4), x0 = Self.random(257, seed: 19, scale: 4), g = Self.random(257, seed: 20)
        let slope = Naive.gradient({ Naive.gelu($0).reduce(0, +) }, at: x0)
        let want = zip(zip(x, x0), zip(Naive.gelu(x0), slope)).map { p, f in f.0 + f.1 * (p.0 - p.1) }
        var out = [Float](repeating: 0, count: x.count), dx = out
        geluTangentForward(out: &out, inp: Self.float(x), at: Self.float(x0), n: x.count)
        Self.check("gelu tangent forward", out, want)
        let tangent = { (v: [Double]) in zip(zip(v, x0), zip(Naive.gelu(x0), slope)).map { p, f in f.0 + f.1 * (p.0 - p.1) } }
        geluTangentBackward(dinp: &dx, dout: Self.float(g), at: Self.float(x0), n: x.count)
        Self.check("gelu tangent dx", dx, Naive.gradient({ Self.dot(g, tangent($0)) }, at: x))
        // At x0 itself the tangent is GELU.
        var atPoint = [Float](repeating: 0, count: x.count), gelu = atPoint
        geluTangentForward(out: &atPoint, inp: Self.float(x0), at: Self.float(x0), n: x.count)
        geluForward(out: &gelu, inp: Self.float(x0), n: x.count)
        #expect(zip(atPoint, gelu).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
    }

    /// Scores, softmax and values, forward and backward, through the causal mask.
    @Test func attentionForwardAndBackward() {
        let (B, T, C, NH) = (2, 5, 8, 2)
        let alpha = 0.35
        let qkv = Self.random(B * T * 3 * C, seed: 18, scale: 1.5), gz = Self.random(B * T * C, seed: 19)
        var att = [Float](repeating: 0, count: B * NH * T * T), z = [Float](repeating: 0, count: B * T * C)
        attentionScoresForward(att: &att, qkv: Self.float(qkv), B: B, T: T, C: C, NH: NH, alpha: Float(alpha))
        #expect(att[1] == -.infinity && att[T] != -.infinity)
        softmaxForward(out: &att, x: att, rows: B * NH * T, cols: T)
        attentionValuesForward(z: &z, pattern: att, qkv: Self.float(qkv), B: B, T: T, C: C, NH: NH)
        let naive = Naive.attention(qkv, B: B, T: T, C: C, NH: NH, alpha: alpha)
        Self.check("attention pattern", att, naive.pattern)
        Self.check("attention z", z, naive.z)
        var dpattern = [Float](repeating: 0, count: B * NH * T * T), dqkv = [Float](repeating: 0, count: B * T * 3 * C)
        attentionValuesBackward(dpattern: &dpattern, dqkv: &dqkv, dz: Self.float(gz), pattern: att, qkv: Self.float(qkv),
                                B: B, T: T, C: C, NH: NH)
        // d/dpattern of Σ gz · (pattern · v), every entry (masked ones too).
        var wantPattern = [Double](repeating: 0, count: B * NH * T * T)
        let dh = C / NH
        for b in 0..<B { for h in 0..<NH { for i in 0..<T { for j in 0..<T {
            wantPattern[((b * NH + h) * T + i) * T + j] = (0..<dh).reduce(0) {
                $0 + gz[(b * T + i) * C + h * dh + $1] * qkv[(b * T + j) * 3 * C + 2 * C + h * dh + $1]
            }
        } } } }
        Self.check("attention dpattern", dpattern, wantPattern)
        softmaxBackward(dx: &dpattern, dp: dpattern, p: att, rows: B * NH * T, cols: T)
        #expect(dpattern[1] == 0, "masked scores get no gradient")
        attentionScoresBackward(dqkv: &dqkv, datt: dpattern, qkv: Self.float(qkv), B: B, T: T, C: C, NH: NH, alpha: Float(alpha))
        Self.check("attention dqkv", dqkv,
                   Naive.gradient({ Self.dot(gz, Naive.attention($0, B: B, T: T, C: C, NH: NH, alpha: alpha).z) }, at: qkv))
    }

    @Test func headOutputsAndTheirSum() {
        let (N, C, NH) = (3, 8, 4)
        let z = Self.random(N * C, seed: 20), wO = Self.random(C * C, seed: 21), bO = Self.random(C, seed: 22)
        let g = Self.random(N * NH * C, seed: 23)
        var result = [Float](repeating: 0, count: N * NH * C), sum = [Float](repeating: 0, count: N * C)
        headOutputForward(result: &result, z: Self.float(z), wO: Self.float(wO), N: N, C: C, NH: NH)
        headSumForward(out: &sum, result: result, bO: Self.float(bO), N: N, C: C, NH: NH)
        Self.check("heads sum to z · W_O + b_O", sum, Naive.matmul(z, wO, bO, N: N, IC: C, OC: C))
        func heads(_ z: [Double], _ wO: [Double]) -> [Double] {
            let dh = C / NH
            var out = [Double](repeating: 0, count: N * NH * C)
            for n in 0..<N { for h in 0..<NH { for c in 0..<C {
                out[(n * NH + h) * C + c] = (0..<dh).reduce(0) { $0 + z[n * C + h * dh + $1] * wO[(h * dh + $1) * C + c] }
            } } }
            return out
        }
        Self.check("head outputs", result, heads(z, wO))
        var dz = [Float](repeating: 0, count: N * C), dwO = [Float](repeating: 0, count: C * C)
        headOutputBackward(dz: &dz, dwO: &dwO, dresult: Self.float(g), z: Self.float(z), wO: Self.float(wO), N: N, C: C, NH: NH)
        Self.check("head outputs dz", dz, Naive.gradient({ Self.dot(g, heads($0, wO)) }, at: z))
        Self.check("head outputs dwO", dwO, Naive.gradient({ Self.dot(g, heads(z, $0)) }, at: wO))
    }

    @Test func embeddingBackwardAccumulatesRepeatedIDs() {
        let (V, C) = (5, 3)
        let table = Self.float(Self.random(V * C, seed: 24))
        let ids = [2, 0, 2, 4]
        var out = [Float](repeating: 0, count: ids.count * C)
        embeddingForward(out: &out, ids: ids, table: table, C: C)
        #expect(Array(out[0..<3]) == Array(table[6..<9]) && Array(out[6..<9]) == Array(table[6..<9]))
        let g = Self.random(ids.count * C, seed: 25)
        var dtable = [Float](repeating: 0, count: V * C)
        embeddingBackward(dtable: &dtable, dout: Self.float(g), ids: ids, C: C)
        let want = Naive.gradient({ t in
            Self.dot(g, ids.flatMap { id in (0..<C).map { t[id * C + $0] } })
        }, at: table.map(Double.init))
        Self.check("embedding dtable", dtable, want)
    }

    @Test func crossEntropyAndLogitDifference() {
        let (B, T, V) = (2, 4, 7)
        let logits = Self.random(B * T * V, seed: 26, scale: 3)
        let tokens = [[1, 5, 0, 6], [3, 3, 2, 4]]
        var dlogits = [Float](repeating: 0, count: B * T * V)
        let ce = crossEntropy(logits: Self.float(logits), tokens: tokens, V: V, dlogits: &dlogits)
        #expect(abs(ce.mean - Naive.crossEntropy(logits, tokens: tokens, V: V)) < 1e-5)
        Self.check("cross-entropy dlogits", dlogits, Naive.gradient({ Naive.crossEntropy($0, tokens: tokens, V: V) }, at: logits))
        let last = Self.float(Self.random(B * V, seed: 27))
        let diff = logitDifferenceForward(logits: last, answer: [2, 5], wrong: [1, 1], V: V)
        #expect(diff == [Double(last[2]) - Double(last[1]), Double(last[V + 5]) - Double(last[V + 1])])
        var dl = [Float](repeating: 0, count: B * V)
        logitDifferenceBackward(dlogits: &dl, answer: [2, 5], wrong: [1, 1], V: V)
        #expect(dl[2] == 1 && dl[1] == -1 && dl[V + 5] == 1 && dl[V + 1] == -1 && dl.reduce(0, +) == 0)
    }

    /// `ignoreTarget`: the pairs predicting that id leave the mean and get no gradient (labels −100);
    /// an id that is no target changes nothing, bit for bit.
    @Test func crossEntropyIgnoringATarget() {
        let (B, T, V) = (2, 4, 7)
        let logits = Self.random(B * T * V, seed: 30, scale: 3)
        let tokens = [[1, 5, 0, 5], [3, 5, 2, 4]]
        var dlogits = [Float](repeating: 0, count: B * T * V)
        let ce = crossEntropy(logits: Self.float(logits), tokens: tokens, V: V, dlogits: &dlogits, ignoreTarget: 5)
        // The kept pairs (b, t → t+1): (0, 1 → 0), (1, 1 → 2), (1, 2 → 4).
        let kept = [(0, 1), (1, 1), (1, 2)]
        func pairLoss(_ l: [Double], _ b: Int, _ t: Int) -> Double {
            let row = Array(l[((b * T + t) * V)..<((b * T + t + 1) * V)])
            let m = row.max()!
            return m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[tokens[b][t + 1]]
        }
        func masked(_ l: [Double]) -> Double { kept.map { pairLoss(l, $0.0, $0.1) }.reduce(0, +) / Double(kept.count) }
        #expect(abs(ce.mean - masked(logits)) < 1e-5)
        #expect(abs(ce.perPrompt[0] - pairLoss(logits, 0, 1)) < 1e-5)
        Self.check("masked cross-entropy dlogits", dlogits, Naive.gradient(masked, at: logits))
        var plain = [Float](repeating: 0, count: B * T * V), absent = plain
        let a = crossEntropy(logits: Self.float(logits), tokens: tokens, V: V, dlogits: &plain)
        let b = crossEntropy(logits: Self.float(logits), tokens: tokens, V: V, dlogits: &absent, ignoreTarget: 6)
        #expect(a.mean == b.mean && a.perPrompt == b.perPrompt && plain == absent)
    }

    /// sgemm on views: a column slice of a wider matrix, as Q|K|V of c_attn.
    @Test func matmulOnColumnSlices() {
        let (N, IC, OC) = (3, 4, 2)
        let x = Self.random(N * IC, seed: 28), wide = Self.random(IC * 3 * OC, seed: 29)
        var out = [Float](repeating: 0, count: N * 3 * OC)
        Self.float(wide).withUnsafeBufferPointer { w in
            out.withUnsafeMutableBufferPointer { o in
                matmulForward(out: o.baseAddress! + OC, inp: Self.float(x), w: w.baseAddress! + OC, bias: nil, N: N, IC: IC, OC: OC,
                              ldw: 3 * OC, ldout: 3 * OC)
            }
        }
        let slice = (0..<IC).flatMap { i in (0..<OC).map { wide[i * 3 * OC + OC + $0] } }
        let want = Naive.matmul(x, slice, nil, N: N, IC: IC, OC: OC)
        let got = (0..<N).flatMap { n in (0..<OC).map { out[n * 3 * OC + OC + $0] } }
        Self.check("matmul column slice", got, want)
    }
    /// Attention over rows `start..<T` with the keys and values before `start` taken from a
    /// prefix (patching's causal reuse) equals those rows of plain attention over all T, for
    /// every start, with two sequences side by side in one batch.
    @Test func attentionWithAPrefixMatchesTheFullSequence() {
        let (T, C, NH) = (6, 8, 2)
        let alpha: Float = 0.35
        let sequences = [Self.float(Self.random(T * 3 * C, seed: 40, scale: 1.5)), Self.float(Self.random(T * 3 * C, seed: 41, scale: 1.5))]
        // Plain attention over each whole sequence: its pattern (NH, T, T) and z (T, C).
        let full = sequences.map { qkv in
            var att = [Float](repeating: 0, count: NH * T * T), z = [Float](repeating: 0, count: T * C)
            attentionScoresForward(att: &att, qkv: qkv, B: 1, T: T, C: C, NH: NH, alpha: alpha)
            softmaxForward(out: &att, x: att, rows: NH * T, cols: T)
            attentionValuesForward(z: &z, pattern: att, qkv: qkv, B: 1, T: T, C: C, NH: NH)
            return (att, z)
        }
        var worst: Float = 0
        for (start0, start1) in [(0, 0), (1, 4), (3, 5), (5, 2)] {
            let starts = [start0, start1], rows = starts.map { T - $0 }
            let qkv = (0..<2).flatMap { Array(sequences[$0][(starts[$0] * 3 * C)...]) }
            sequences[0].withUnsafeBufferPointer { p0 in sequences[1].withUnsafeBufferPointer { p1 in
                let segments = AttentionSegment.packed([(rows[0], starts[0], p0.baseAddress!), (rows[1], starts[1], p1.baseAddress!)],
                                                       NH: NH)
                var att = [Float](repeating: .nan, count: AttentionSegment.scoresSize(segments, NH: NH))
                var z = [Float](repeating: .nan, count: (rows[0] + rows[1]) * C)
                attentionScoresForward(att: &att, qkv: qkv, segments: segments, C: C, NH: NH, alpha: alpha)
                attentionSoftmaxForward(att: &att, segments: segments, NH: NH)
                attentionValuesForward(z: &z, pattern: att, qkv: qkv, segments: segments, C: C, NH: NH)
                for (b, s) in segments.enumerated() {
                    for h in 0..<NH { for i in 0..<s.rows { for j in 0..<T {
                        let want = full[b].0[(h * T + starts[b] + i) * T + j], got = att[s.att + (h * s.rows + i) * T + j]
                        worst = max(worst, abs(got - want))
                    } } }
                    for i in 0..<s.rows { for c in 0..<C {
                        worst = max(worst, abs(z[(s.row + i) * C + c] - full[b].1[(starts[b] + i) * C + c]))
                    } }
                }
            } }
        }
        print("attention with a prefix: max |diff| against the full sequence \(worst)")
        #expect(worst <= 1e-6)
    }

    /// One attention row recomputed alone equals that row of the pattern, and a swapped key changes it.
    @Test func attentionRowMatchesThePattern() {
        let (T, C, NH) = (5, 8, 2), dh = C / NH
        let alpha = 0.35
        let qkv = Self.random(T * 3 * C, seed: 42, scale: 1.5)
        let pattern = Naive.attention(qkv, B: 1, T: T, C: C, NH: NH, alpha: alpha).pattern
        let f = Self.float(qkv)
        var worst = 0.0
        f.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            for h in 0..<NH {
                for t in 0..<T {
                    let row = attentionRow(query: base + t * 3 * C + h * dh, keys: { base + $0 * 3 * C + C + h * dh }, count: t + 1,
                                           dh: dh, alpha: Float(alpha))
                    for s in 0...t { worst = max(worst, abs(Double(row[s]) - pattern[(h * T + t) * T + s])) }
                }
            }
            // The query of position 3 against the keys with key 1 replaced by key 4.
            let swapped = attentionRow(query: base + 3 * 3 * C, keys: { base + ($0 == 1 ? 4 : $0) * 3 * C + C }, count: 4, dh: dh,
                                       alpha: Float(alpha))
            let scores = (0..<4).map { s in alpha * (0..<dh).reduce(0) { $0 + qkv[3 * 3 * C + $1] * qkv[(s == 1 ? 4 : s) * 3 * C + C + $1] } }
            let e = scores.map { exp($0 - scores.max()!) }
            for s in 0..<4 { worst = max(worst, abs(Double(swapped[s]) - e[s] / e.reduce(0, +))) }
        }
        print("attention row: max |diff| \(worst)")
        #expect(worst <= 1e-6)
    }

    /// The unembedding of chosen rows (gathered) against the naive one on those rows, and its
    /// backward, scattering d x back to the rows, against finite differences.
    @Test(arguments: [[1, 2, 3], [4, 0, 2]])
    func unembedRowsForwardAndBackward(rows: [Int]) {
        let (N, C, V) = (5, 6, 11)
        let x = Self.random(N * C, seed: 43), wU = Self.random(V * C, seed: 44), bU = Self.random(V, seed: 45)
        let g = Self.random(rows.count * V, seed: 46)
        func naive(_ x: [Double], _ wU: [Double], _ bU: [Double]) -> [Double] {
            Naive.unembed(rows.flatMap { r in x[(r * C)..<(r * C + C)] }, wU, bU, R: rows.count, C: C, V: V)
        }
        var out = [Float](repeating: 0, count: rows.count * V)
        unembedRowsForward(logits: &out, x: Self.float(x), rows: rows, wU: Self.float(wU), bU: Self.float(bU), C: C, V: V)
        Self.check("unembed rows forward", out, naive(x, wU, bU))
        var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: V * C), db = [Float](repeating: 0, count: V)
        unembedRowsBackward(dx: &dx, dwU: &dw, dbU: &db, dlogits: Self.float(g), x: Self.float(x), rows: rows, wU: Self.float(wU),
                            C: C, V: V)
        Self.check("unembed rows dx", dx, Naive.gradient({ Self.dot(g, naive($0, wU, bU)) }, at: x))
        Self.check("unembed rows dwU", dw, Naive.gradient({ Self.dot(g, naive(x, $0, bU)) }, at: wU))
        Self.check("unembed rows dbU", db, Naive.gradient({ Self.dot(g, naive(x, wU, $0)) }, at: bU))
    }
}
