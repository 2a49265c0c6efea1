import Foundation
import TensorCore

/// Which positions get logits; the unembedding is the largest matrix product, so analyses that
/// read only the last position ask for `.last`.
public enum LogitPositions: Sendable { case all, last, none }

/// The output of `GPT2Model.forward`.
public struct ForwardResult: Sendable {
    public let tokens: [[Int]]
    /// `[B, T, V]` for `.all`, `[B, 1, V]` for `.last`, `[B, 0, V]` for `.none`.
    public let logits: Tensor
    /// The requested hooks, under TransformerLens names and shapes (after interventions).
    public let cache: [HookName: Tensor]
    public let activations: Activations
}

/// A GPT-2 ready to run: config, LN mode and processed weights.
public final class GPT2Model: Sendable {
    public let config: GPT2Config
    public let lnMode: LNMode
    public let processing: ProcessingOptions
    public let weights: ModelWeights

    public init(config: GPT2Config, weights raw: ModelWeights, processing: ProcessingOptions = .all) {
        var w = raw
        w.process(processing, config: config)
        self.config = config
        self.lnMode = config.lnMode
        self.processing = processing
        self.weights = w
    }

    /// The denominator of every LayerNorm: `sqrt(var + eps)`, or the constant `sqrt(eps)` that an
    /// LN-free checkpoint encodes (its `hook_scale` is that constant at every position).
    var lnFreeScale: Float { Float(config.layerNormEpsilon.squareRoot()) }

    /// Validates a batch of token id lists: non-empty, equal lengths, within context and vocabulary.
    public func checkTokens(_ tokens: [[Int]]) throws(ModelError) {
        guard let first = tokens.first, !first.isEmpty else { throw .emptyPrompt }
        for (i, t) in tokens.enumerated() {
            guard !t.isEmpty else { throw .emptyPrompt }
            guard t.count == first.count else { throw .unequalLengths(first: first.count, other: t.count, index: i) }
            if let bad = t.first(where: { $0 < 0 || $0 >= config.dVocab }) {
                throw .tokenOutOfRange(id: bad, dVocab: config.dVocab)
            }
        }
        guard first.count <= config.nCtx else { throw .promptTooLong(tokens: first.count, nCtx: config.nCtx) }
    }

    /// Runs the batch `tokens` (B prompts of equal length T), caching the hooks in `cache` and
    /// applying `interventions` at their hook points in the order given.
    public func forward(_ tokens: [[Int]], cache: Set<HookName> = [], interventions: [Intervention] = [],
                        logits logitPositions: LogitPositions = .all) throws(ModelError) -> ForwardResult {
        try checkTokens(tokens)
        let cfg = config
        let B = tokens.count, T = tokens[0].count, N = B * T
        let C = cfg.dModel, NH = cfg.nHeads, dh = cfg.dHead, M = cfg.dMLP, V = cfg.dVocab
        var byHook: [HookName: [Intervention]] = [:]
        for iv in interventions {
            if let l = iv.hook.layer, l >= cfg.nLayers { throw .layerOutOfRange(iv.hook.description, nLayers: cfg.nLayers) }
            byHook[iv.hook, default: []].append(iv)
        }
        var out: [HookName: Tensor] = [:]
        // Applies interventions to, then caches, the activation at `hook`.
        func hook(_ name: HookName, _ buffer: inout [Float], _ layout: HookLayout) throws(ModelError) {
            let ivs = byHook[name] ?? []
            let wanted = cache.contains(name)
            if ivs.isEmpty && !wanted { return }
            try buffer.withUnsafeMutableBufferPointer { (p) throws(ModelError) in
                for iv in ivs { try iv.apply(to: p.baseAddress!, layout: layout) }
                if wanted { out[name] = layout.extract(from: p.baseAddress!) }
            }
        }
        let L = Layouts(B: B, T: T, C: C, NH: NH, dh: dh, M: M)

        // Embeddings.
        var embed = [Float](repeating: 0, count: N * C)
        var posEmbed = [Float](repeating: 0, count: N * C)
        weights.wE.withUnsafeBufferPointer { wE in
            weights.wPos.withUnsafeBufferPointer { wPos in
                for b in 0..<B {
                    for t in 0..<T {
                        let row = (b * T + t) * C
                        for c in 0..<C {
                            embed[row + c] = wE[tokens[b][t] * C + c]
                            posEmbed[row + c] = wPos[t * C + c]
                        }
                    }
                }
            }
        }
        try hook(.embed(), &embed, L.resid)
        try hook(.posEmbed(), &posEmbed, L.resid)
        var resid = [Float](repeating: 0, count: N * C)
        for i in 0..<(N * C) { resid[i] = embed[i] + posEmbed[i] }

        var layers: [LayerActivations] = []
        layers.reserveCapacity(cfg.nLayers)
        for l in 0..<cfg.nLayers {
            let w = weights.layers[l]
            func h(_ p: HookName.Point) -> HookName { HookName(p, layer: l) }
            var residPre = resid
            try hook(h(.residPre), &residPre, L.resid)

            var ln1Mean = [Float](), ln1Scale = [Float](), ln1Out = [Float]()
            try layerNorm(residPre, N: N, C: C, w: w.ln1W, b: w.ln1B, mean: &ln1Mean, scale: &ln1Scale, out: &ln1Out,
                          scaleHook: h(.ln1Scale), normalizedHook: h(.ln1Normalized), hook: hook, layouts: L)

            var qkv = matmulBias(ln1Out, w.wQKV, w.bQKV, rows: N, inner: C, cols: 3 * C)
            try hook(h(.q), &qkv, L.qkv(part: 0))
            try hook(h(.k), &qkv, L.qkv(part: 1))
            try hook(h(.v), &qkv, L.qkv(part: 2))

            var scores = [Float](repeating: 0, count: B * NH * T * T)
            var attnScale = Float(1)
            if cfg.scaleAttnWeights { attnScale /= Float(dh).squareRoot() }
            if cfg.scaleAttnByInverseLayerIdx { attnScale /= Float(l + 1) }
            attentionScores(qkv: qkv, scores: &scores, B: B, T: T, C: C, NH: NH, dh: dh, alpha: attnScale)
            try hook(h(.attnScores), &scores, L.attn)
            var pattern = softmaxRows(scores, rows: B * NH * T, cols: T)
            try hook(h(.pattern), &pattern, L.attn)
            var z = [Float](repeating: 0, count: N * C)
            attentionValues(pattern: pattern, qkv: qkv, z: &z, B: B, T: T, C: C, NH: NH, dh: dh)
            try hook(h(.z), &z, L.z)

            var result: [Float]? = nil
            var attnOut: [Float]
            let resultName = h(.result)
            if cache.contains(resultName) || byHook[resultName] != nil {
                var r = headResults(z: z, wO: w.wO, N: N, C: C, NH: NH, dh: dh)
                try hook(resultName, &r, L.result)
                // attn_out = b_O + Σ_h result[h], summed in head order as before (pointer loops vectorise).
                attnOut = [Float](repeating: 0, count: N * C)
                r.withUnsafeBufferPointer { rp in
                    w.bO.withUnsafeBufferPointer { bp in
                        attnOut.withUnsafeMutableBufferPointer { op in
                            for n in 0..<N {
                                let o = op.baseAddress! + n * C
                                o.update(from: bp.baseAddress!, count: C)
                                for hd in 0..<NH {
                                    let src = rp.baseAddress! + (n * NH + hd) * C
                                    for c in 0..<C { o[c] += src[c] }
                                }
                            }
                        }
                    }
                }
                result = r
            } else {
                attnOut = matmulBias(z, w.wO, w.bO, rows: N, inner: C, cols: C)
            }
            try hook(h(.attnOut), &attnOut, L.resid)
            var residMid = residPre
            for i in 0..<(N * C) { residMid[i] += attnOut[i] }
            try hook(h(.residMid), &residMid, L.resid)

            var ln2Mean = [Float](), ln2Scale = [Float](), ln2Out = [Float]()
            try layerNorm(residMid, N: N, C: C, w: w.ln2W, b: w.ln2B, mean: &ln2Mean, scale: &ln2Scale, out: &ln2Out,
                          scaleHook: h(.ln2Scale), normalizedHook: h(.ln2Normalized), hook: hook, layouts: L)
            var mlpPre = matmulBias(ln2Out, w.wIn, w.bIn, rows: N, inner: C, cols: M)
            try hook(h(.mlpPre), &mlpPre, L.mlp)
            var mlpPost = geluNew(mlpPre)
            try hook(h(.mlpPost), &mlpPost, L.mlp)
            var mlpOut = matmulBias(mlpPost, w.wOut, w.bOut, rows: N, inner: M, cols: C)
            try hook(h(.mlpOut), &mlpOut, L.resid)
            var residPost = residMid
            for i in 0..<(N * C) { residPost[i] += mlpOut[i] }
            try hook(h(.residPost), &residPost, L.resid)
            resid = residPost

            layers.append(LayerActivations(
                residPre: residPre, ln1Mean: ln1Mean, ln1Scale: ln1Scale, ln1Out: ln1Out, qkv: qkv,
                scores: scores, pattern: pattern, z: z, result: result, attnOut: attnOut, residMid: residMid,
                ln2Mean: ln2Mean, ln2Scale: ln2Scale, ln2Out: ln2Out, mlpPre: mlpPre, mlpPost: mlpPost,
                mlpOut: mlpOut, residPost: residPost))
        }

        var lnFMean = [Float](), lnFScale = [Float](), lnFOut = [Float]()
        try layerNorm(resid, N: N, C: C, w: weights.lnFW, b: weights.lnFB, mean: &lnFMean, scale: &lnFScale,
                      out: &lnFOut, scaleHook: HookName(.lnFinalScale), normalizedHook: HookName(.lnFinalNormalized),
                      hook: hook, layouts: L)

        // Unembed the requested positions: logits = x · W_U + b_U with W_U stored (V, C).
        var rows: [Int]
        switch logitPositions {
        case .all: rows = Array(0..<N)
        case .last: rows = (0..<B).map { $0 * T + T - 1 }
        case .none: rows = []
        }
        var logits = [Float](repeating: 0, count: rows.count * V)
        if !rows.isEmpty {
            var x = [Float](repeating: 0, count: rows.count * C)
            for (i, r) in rows.enumerated() {
                for c in 0..<C { x[i * C + c] = lnFOut[r * C + c] }
            }
            for i in 0..<rows.count {
                for v in 0..<V { logits[i * V + v] = weights.bU[v] }
            }
            x.withUnsafeBufferPointer { xp in
                weights.wU.withUnsafeBufferPointer { wp in
                    logits.withUnsafeMutableBufferPointer { lp in
                        sgemm(transB: true, M: rows.count, N: V, K: C, A: xp.baseAddress!, lda: C,
                              B: wp.baseAddress!, ldb: C, beta: 1, C: lp.baseAddress!, ldc: V)
                    }
                }
            }
        }
        let perPrompt = rows.count / max(B, 1)
        let acts = Activations(B: B, T: T, embed: embed, posEmbed: posEmbed, layers: layers,
                               lnFMean: lnFMean, lnFScale: lnFScale, lnFOut: lnFOut)
        return ForwardResult(tokens: tokens, logits: Tensor(shape: [B, perPrompt, V], data: logits), cache: out,
                             activations: acts)
    }

    /// LayerNorm in two steps so that `hook_scale` can be intervened on before normalising.
    /// Mode `ln-free` uses the constant `sqrt(eps)` instead of `sqrt(var + eps)`.
    private func layerNorm(
        _ x: [Float], N: Int, C: Int, w: [Float]?, b: [Float]?,
        mean: inout [Float], scale: inout [Float], out: inout [Float],
        scaleHook: HookName, normalizedHook: HookName,
        hook: (HookName, inout [Float], HookLayout) throws(ModelError) -> Void, layouts L: Layouts
    ) throws(ModelError) {
        mean = [Float](repeating: 0, count: N)
        scale = [Float](repeating: 0, count: N)
        let eps = Float(config.layerNormEpsilon)
        let free = lnMode == .lnFree
        let fixed = lnFreeScale
        for n in 0..<N {
            var m: Float = 0
            for c in 0..<C { m += x[n * C + c] }
            m /= Float(C)
            mean[n] = m
            if free {
                scale[n] = fixed
            } else {
                var v: Float = 0
                for c in 0..<C { let d = x[n * C + c] - m; v += d * d }
                scale[n] = (v / Float(C) + eps).squareRoot()
            }
        }
        try hook(scaleHook, &scale, L.scale)
        out = [Float](repeating: 0, count: N * C)
        for n in 0..<N {
            let m = mean[n], inv = 1 / scale[n]
            for c in 0..<C { out[n * C + c] = (x[n * C + c] - m) * inv }
            if let w, let b {
                for c in 0..<C { out[n * C + c] = out[n * C + c] * w[c] + b[c] }
            }
        }
        try hook(normalizedHook, &out, L.resid)
    }
}

/// Layouts of every hook for one batch shape (TransformerLens shapes over our buffers).
struct Layouts {
    let B: Int, T: Int, C: Int, NH: Int, dh: Int, M: Int
    var resid: HookLayout { HookLayout(shape: [B, T, C], strides: [T * C, C, 1], posAxis: 1) }
    var scale: HookLayout { HookLayout(shape: [B, T, 1], strides: [T, 1, 1], posAxis: 1) }
    var mlp: HookLayout { HookLayout(shape: [B, T, M], strides: [T * M, M, 1], posAxis: 1) }
    var z: HookLayout { HookLayout(shape: [B, T, NH, dh], strides: [T * C, C, dh, 1], posAxis: 1, headAxis: 2) }
    var attn: HookLayout {
        HookLayout(shape: [B, NH, T, T], strides: [NH * T * T, T * T, T, 1], posAxis: 2, headAxis: 1)
    }
    var result: HookLayout {
        HookLayout(shape: [B, T, NH, C], strides: [T * NH * C, NH * C, C, 1], posAxis: 1, headAxis: 2)
    }
    func qkv(part: Int) -> HookLayout {
        HookLayout(shape: [B, T, NH, dh], strides: [T * 3 * C, 3 * C, dh, 1], offset: part * C, posAxis: 1, headAxis: 2)
    }
}
