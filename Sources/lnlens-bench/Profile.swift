import Foundation
import GPT2
import TensorCore

/// Phase-by-phase timing of the forward pass (`--profile`).
///
/// `GPT2Model.forward` cannot be timed from inside, so this replays its computation with the
/// same public kernels (`matmulBias`, `attentionScores`, `softmaxRows`, `attentionValues`,
/// `headResults`, `geluNew`) and copies of its inline loops (embedding, LayerNorm, residual adds,
/// unembedding bias fill), timing each phase. The replay skips hook bookkeeping and the
/// `Activations` record, so `forward − replay` is that overhead.
func benchProfile(model: GPT2Model, tokens: [Int], rates: SgemmRates, forwardNoCacheMs: Double,
                  forwardFullCacheMs: Double, options o: BenchOptions) -> ([Measurement], [String: Double]) {
    let cfg = model.config, w = model.weights
    let B = 1, T = tokens.count, N = B * T
    let C = cfg.dModel, NH = cfg.nHeads, dh = cfg.dHead, M = cfg.dMLP, V = cfg.dVocab
    let phases = ["embed", "layernorm (ln1, ln2, ln_final)", "qkv matmul (c_attn)", "attention scores (q·kᵀ + mask)",
                  "softmax", "attention values (pattern·v)", "attn out matmul (c_proj)", "residual adds",
                  "mlp in matmul (c_fc)", "gelu_new", "mlp out matmul (c_proj)", "unembed bias fill + copy",
                  "unembed sgemm"]
    var perRun: [[Double]] = []
    var clock = 0.0
    var times = [Double](repeating: 0, count: phases.count)
    func lap(_ i: Int) { let t = now(); times[i] += t - clock; clock = t }

    func layerNorm(_ x: [Float]) -> [Float] {
        // The forward's loops (weights folded, so centre and normalise only).
        var mean = [Float](repeating: 0, count: N), scale = [Float](repeating: 0, count: N)
        let eps = Float(cfg.layerNormEpsilon)
        for n in 0..<N {
            var m: Float = 0
            for c in 0..<C { m += x[n * C + c] }
            m /= Float(C)
            mean[n] = m
            var v: Float = 0
            for c in 0..<C { let d = x[n * C + c] - m; v += d * d }
            scale[n] = (v / Float(C) + eps).squareRoot()
        }
        var out = [Float](repeating: 0, count: N * C)
        for n in 0..<N {
            let m = mean[n], inv = 1 / scale[n]
            for c in 0..<C { out[n * C + c] = (x[n * C + c] - m) * inv }
        }
        return out
    }

    func replay() {
        times = [Double](repeating: 0, count: phases.count)
        clock = now()
        var resid = [Float](repeating: 0, count: N * C)
        for t in 0..<T {
            for c in 0..<C { resid[t * C + c] = w.wE[tokens[t] * C + c] + w.wPos[t * C + c] }
        }
        lap(0)
        for l in 0..<cfg.nLayers {
            let lw = w.layers[l]
            let ln1 = layerNorm(resid); lap(1)
            let qkv = matmulBias(ln1, lw.wQKV, lw.bQKV, rows: N, inner: C, cols: 3 * C); lap(2)
            var scores = [Float](repeating: 0, count: B * NH * T * T)
            attentionScores(qkv: qkv, scores: &scores, B: B, T: T, C: C, NH: NH, dh: dh,
                            alpha: 1 / Float(dh).squareRoot()); lap(3)
            let pattern = softmaxRows(scores, rows: B * NH * T, cols: T); lap(4)
            var z = [Float](repeating: 0, count: N * C)
            attentionValues(pattern: pattern, qkv: qkv, z: &z, B: B, T: T, C: C, NH: NH, dh: dh); lap(5)
            let attnOut = matmulBias(z, lw.wO, lw.bO, rows: N, inner: C, cols: C); lap(6)
            var mid = resid
            for i in 0..<(N * C) { mid[i] += attnOut[i] }
            lap(7)
            let ln2 = layerNorm(mid); lap(1)
            let pre = matmulBias(ln2, lw.wIn, lw.bIn, rows: N, inner: C, cols: M); lap(8)
            let post = geluNew(pre); lap(9)
            let mlpOut = matmulBias(post, lw.wOut, lw.bOut, rows: N, inner: M, cols: C); lap(10)
            var postResid = mid
            for i in 0..<(N * C) { postResid[i] += mlpOut[i] }
            resid = postResid
            lap(7)
        }
        let lnF = layerNorm(resid); lap(1)
        var logits = [Float](repeating: 0, count: N * V)
        var x = [Float](repeating: 0, count: N * C)
        for r in 0..<N { for c in 0..<C { x[r * C + c] = lnF[r * C + c] } }
        for i in 0..<N { for v in 0..<V { logits[i * V + v] = model.weights.bU[v] } }
        lap(11)
        sgemm(transB: true, M: N, N: V, K: C, A: x, lda: C, B: w.wU, ldb: C, beta: 1, C: &logits, ldc: V)
        lap(12)
        blackHole(logits[N * V - 1])
    }

    for _ in 0..<o.warmup { replay() }
    var totals: [Double] = []
    let faults0 = minorFaults()
    for _ in 0..<o.runs {
        let t0 = now()
        replay()
        totals.append(now() - t0)
        perRun.append(times)
    }
    let replayFaults = Double(minorFaults() - faults0) / Double(o.runs)

    var rows: [Measurement] = []
    let layerFlops = 2 * Double(N)
    let flops: [Double?] = [nil, nil, layerFlops * Double(C * 3 * C) * Double(cfg.nLayers),
                            2 * Double(B * NH * T * T * dh) * Double(cfg.nLayers), nil,
                            2 * Double(B * NH * T * T * dh) * Double(cfg.nLayers),
                            layerFlops * Double(C * C) * Double(cfg.nLayers), nil,
                            layerFlops * Double(C * M) * Double(cfg.nLayers), nil,
                            layerFlops * Double(M * C) * Double(cfg.nLayers), nil, layerFlops * Double(C * V)]
    for (i, name) in phases.enumerated() {
        let ref = i == 12 ? rates.unembed : rates.block
        rows.append(Measurement(section: "profile", name: name, seconds: perRun.map { $0[i] }, cores: nil,
                                gflop: flops[i].map { $0 / 1e9 }, reference: ref))
    }
    let all = ForwardFLOPs(config: cfg, B: B, T: T, logitRows: N)
    rows.append(Measurement(section: "profile", name: "sum of phases (replay, no hooks)", seconds: totals, cores: nil,
                            faults: replayFaults, gflop: all.total / 1e9,
                            reference: all.referenceRate(blockGFLOPS: rates.block, unembedGFLOPS: rates.unembed)))

    // Caching or patching attn.hook_result swaps the c_proj matmul for per-head products and a sum.
    let z = [Float](repeating: 0.01, count: N * C)
    let wO = w.layers[0].wO, bO = w.layers[0].bO
    let projFlops = layerFlops * Double(C * C) * Double(cfg.nLayers) / 1e9
    var r = headResults(z: z, wO: wO, N: N, C: C, NH: NH, dh: dh)
    let perHead = measure(warmup: o.warmup, runs: o.runs) {
        for _ in 0..<cfg.nLayers { r = headResults(z: z, wO: wO, N: N, C: C, NH: NH, dh: dh) }
        blackHole(r[0])
    }
    rows.append(Measurement(section: "profile", name: "hook_result: headResults (NH sgemm, K=dh)",
                            seconds: perHead.seconds, cores: perHead.cores, faults: perHead.faultsPerCall,
                            gflop: projFlops, reference: rates.block))
    let headSum = measure(warmup: o.warmup, runs: o.runs) {
        for _ in 0..<cfg.nLayers {
            // The forward's loop that rebuilds attn_out from the per-head results.
            var attnOut = [Float](repeating: 0, count: N * C)
            for n in 0..<N {
                for c in 0..<C { attnOut[n * C + c] = bO[c] }
                for hd in 0..<NH {
                    let base = (n * NH + hd) * C
                    for c in 0..<C { attnOut[n * C + c] += r[base + c] }
                }
            }
            blackHole(attnOut[0])
        }
    }
    rows.append(Measurement(section: "profile", name: "hook_result: sum over heads + b_O (loop)",
                            seconds: headSum.seconds, cores: headSum.cores, faults: headSum.faultsPerCall,
                            note: "both rows replace 'attn out matmul (c_proj)' when attn.hook_result is cached"))

    let replayMs = Summary(totals.map { $0 * 1e3 }).median
    let derived: [String: Double] = [
        "profile: forward(no cache) − replay, ms": forwardNoCacheMs - replayMs,
        "profile: forward(every hook) − forward(no cache), ms": forwardFullCacheMs - forwardNoCacheMs,
    ]
    return (rows, derived)
}
