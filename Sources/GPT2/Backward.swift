import Foundation
import TensorCore

/// The scalar a backward pass differentiates. For a batch, logit metrics are summed over the
/// prompts (each prompt's gradients are its own); the loss is the mean over every predicted position.
public enum Metric: Sendable, Equatable {
    /// `logit[answer] − logit[wrong]` at the last position.
    case logitDifference(answer: [Int], wrong: [Int])
    /// `logit[answer]` at the last position.
    case logit(answer: [Int])
    /// Mean next-token cross-entropy over the prompts' positions (transformers' `labels=input_ids`).
    case loss

    public var name: String {
        switch self {
        case .logitDifference: "logit-diff"
        case .logit: "logit"
        case .loss: "loss"
        }
    }

    /// The logits the forward must compute for this metric.
    public var logitPositions: LogitPositions { self == .loss ? .all : .last }
}

/// What a backward pass is asked for besides the metric.
public struct BackwardOptions {
    /// Hooks whose gradients to keep (TransformerLens names; `<hook>_grad` in a cache file).
    public var hookGradients: Set<HookName> = []
    /// Accumulate d metric / d parameter here (a zeroed copy with the model's table).
    public var parameterGradients: ModelParameters? = nil
    /// Treat every LayerNorm scale as a constant: no gradient flows through `sqrt(var + eps)` (the
    /// linearisation DLA makes). The gradient at `hook_scale` is still reported, as the gradient
    /// reaching the constant.
    public var freezeLNScale = false
    /// Drop the gradient through blocks' residual contributions (their attn_out and mlp_out): what
    /// reaches the sites upstream then comes only through the other paths (AtP*'s GradDrop).
    public var dropResidualContributions: Set<Int> = []
    /// Added to d metric / d (raw scale of ln_final's input), per row (N): an auxiliary loss on σ.
    public var finalRawScaleGradient: [Float]? = nil
    /// Multiplies the metric's gradient (a loss weight).
    public var metricScale: Float = 1
    /// Accumulates the time of each phase of the backward (the benchmark's `--profile`).
    public var profile: PhaseTimes? = nil

    public init(hookGradients: Set<HookName> = [], parameterGradients: ModelParameters? = nil, freezeLNScale: Bool = false) {
        self.hookGradients = hookGradients
        self.parameterGradients = parameterGradients
        self.freezeLNScale = freezeLNScale
    }
}

/// What a backward pass returns.
public struct BackwardResult: Sendable {
    /// The metric of each prompt (for `.loss`, each prompt's mean cross-entropy).
    public var metric: [Double]
    /// The scalar differentiated: the sum over prompts, or the mean loss.
    public var total: Double
    /// d total / d hook output, under TransformerLens names and shapes.
    public var hookGradients: [HookName: Tensor]
}

extension GPT2Model {
    /// Runs `tokens` forward with `options` (logits as the metric needs) and back, in one call.
    public func gradients(_ tokens: [[Int]], metric: Metric, forward options: ForwardOptions = ForwardOptions(),
                          backward: BackwardOptions = BackwardOptions()) throws(GPT2Error) -> (ForwardPass, BackwardResult) {
        var f = options
        f.retainForBackward = true
        f.logits = metric.logitPositions == .all ? .all : (f.logits == .all ? .all : .last)
        let pass = try run(tokens, f, gradHooks: backward.hookGradients)
        return (pass, try self.backward(pass, metric: metric, options: backward))
    }

    /// The backward pass: the forward's calls in reverse, each op's backward, the hook runner
    /// caching gradients and applying the interventions' derivatives.
    public func backward(_ pass: ForwardPass, metric: Metric, options: BackwardOptions) throws(GPT2Error) -> BackwardResult {
        guard pass.retained else { throw .backwardNeedsRetainedPass }
        let N = pass.N, C = config.dModel, V = config.dVocab, R = pass.logitRows.count
        var runner = pass.runner
        let L = layouts(pass)
        let g = options.parameterGradients
        let p = options.profile
        p?.start()

        // d metric / d logits, for the logit rows it reaches (`gradRows`, indices into
        // `pass.logitRows`): every row for the loss, each prompt's last one for a logit metric.
        let gradRows: [Int]
        var values: [Double]
        var total: Double
        let dlogitsArena: Arena
        switch metric {
        case .loss:
            guard R == N else { throw .metricNeedsLogits(metric: metric.name, positions: "all") }
            gradRows = Array(0..<R)
            dlogitsArena = try allocate(R * V, pass.pool)
            let ce = crossEntropy(logits: pass.logits, tokens: pass.tokens, V: V, dlogits: dlogitsArena.base,
                                  scale: options.metricScale)
            (values, total) = (ce.perPrompt, ce.mean)
        case .logitDifference, .logit:
            let (answer, wrongIDs): ([Int], [Int]?) = switch metric {
            case let .logitDifference(answer, wrong): (answer, wrong)
            case let .logit(answer): (answer, nil)
            case .loss: ([], nil)
            }
            guard answer.count == pass.B, (wrongIDs?.count ?? pass.B) == pass.B else {
                throw .metricNeedsLogits(metric: "\(metric.name) with one answer per prompt", positions: "the last")
            }
            for id in answer + (wrongIDs ?? []) where id < 0 || id >= V {
                throw .tokenOutOfVocabulary(what: "metric", id: id, dVocab: V)
            }
            // The last position of each prompt: its logit row.
            let lastRows: [Int] = (0..<pass.B).map { b in pass.logitRows.firstIndex(of: b * pass.T + pass.T - 1) ?? -1 }
            guard !lastRows.contains(-1) else { throw .metricNeedsLogits(metric: metric.name, positions: "the last") }
            values = (0..<pass.B).map { b in
                Double(pass.logits[lastRows[b] * V + answer[b]]) - (wrongIDs.map { Double(pass.logits[lastRows[b] * V + $0[b]]) } ?? 0)
            }
            total = values.reduce(0, +)
            gradRows = lastRows
            dlogitsArena = try allocate(pass.B * V, pass.pool)
            logitDifferenceBackward(dlogits: dlogitsArena.base, answer: answer, wrong: wrongIDs, V: V, scale: options.metricScale)
        }
        defer { pass.pool?.recycle(dlogitsArena) }

        p?.lap("metric")
        let scratch = try BackwardScratch(pass: pass, config: config)
        defer { scratch.release() }
        // Unembedding: d ln_final output, through the rows the metric reaches only.
        let dLnF = scratch.dLn
        dLnF.update(repeating: 0, count: N * C)
        let rows = gradRows.map { pass.logitRows[$0] }  // rows n = b·T + t of the residual stream
        if rows.count == N {
            unembedBackward(dx: dLnF, dwU: g?.wU, dbU: g?.bU, dlogits: dlogitsArena.base, x: pass.lnF.out, wU: parameters.wU,
                            R: N, C: C, V: V)
        } else {
            var x = [Float](repeating: 0, count: rows.count * C), dx = [Float](repeating: 0, count: rows.count * C)
            for (i, r) in rows.enumerated() {
                for c in 0..<C { x[i * C + c] = pass.lnF.out[r * C + c] }
            }
            unembedBackward(dx: &dx, dwU: g?.wU, dbU: g?.bU, dlogits: dlogitsArena.base, x: x, wU: parameters.wU,
                            R: rows.count, C: C, V: V)
            for (i, r) in rows.enumerated() {
                for c in 0..<C { dLnF[r * C + c] += dx[i * C + c] }
            }
        }
        p?.lap("unembed")
        let dResid = scratch.dResid
        dResid.update(repeating: 0, count: N * C)
        try layerNormBackward(pass.lnF, input: pass.residFinal, dOut: dLnF, dInput: dResid, w: lnFolded ? nil : parameters.lnFW,
                              dw: lnFolded ? nil : g?.lnFW, db: lnFolded ? nil : g?.lnFB, scale: pass.plan.final, freeze: options.freezeLNScale,
                              scaleHook: HookName(.lnFinalScale), normalizedHook: HookName(.lnFinalNormalized),
                              pass, scratch, &runner, p)
        if let extra = options.finalRawScaleGradient {
            extra.withUnsafeBufferPointer {
                rawScaleBackward(dx: dResid, dRawScale: $0.baseAddress!, x: pass.residFinal, mean: pass.lnF.mean,
                                 rawScale: pass.lnF.rawScale, N: N, C: C)
            }
        }
        p?.lap("layernorm")
        for l in stride(from: config.nLayers - 1, through: 0, by: -1) {
            try blockBackward(l, pass, scratch, &runner, options)
        }
        // dResid is now d resid_pre of block 0 before its interventions: d (embed + pos_embed).
        let dEmbed = scratch.dLn, dPos = scratch.dAttnOut
        dEmbed.update(from: dResid, count: N * C)
        dPos.update(from: dResid, count: N * C)
        try runner.backward(.posEmbed(), dPos, L.resid)
        try runner.backward(.embed(), dEmbed, L.resid)
        if let g {
            embeddingBackward(dtable: g.wE, dout: dEmbed, ids: pass.tokens.flatMap { $0 }, C: C)
            embeddingBackward(dtable: g.wPos, dout: dPos, ids: (0..<pass.B).flatMap { _ in Array(0..<pass.T) }, C: C)
        }
        p?.lap("embed")
        return BackwardResult(metric: values, total: total, hookGradients: runner.grads)
    }

    /// One block in reverse. On entry `scratch.dResid` holds d resid_post (before resid_post's
    /// hook); on exit, d resid_pre before its interventions (d resid_post of the block below).
    func blockBackward(_ l: Int, _ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                       _ options: BackwardOptions) throws(GPT2Error) {
        let a = pass.block(l), w = parameters.blocks[l], gw = options.parameterGradients?.blocks[l], L = layouts(pass)
        let N = pass.N, C = config.dModel, M = config.dMLP, NH = config.nHeads, B = pass.B, T = pass.T
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        let folded = lnFolded
        let lns = pass.plan.blocks[l]
        let drop = options.dropResidualContributions.contains(l)
        let p = options.profile
        func hook(_ point: HookName.Point, _ grad: FloatPointer, _ layout: HookLayout) throws(GPT2Error) {
            try runner.backward(h(point), grad, layout)
            p?.lap("hook gradients")
        }

        try hook(.residPost, s.dResid, L.resid)
        // MLP: d mlp_out = d resid_post (the residual add passes it to both).
        s.dMlpOut.update(from: s.dResid, count: N * C)
        if drop { s.dMlpOut.update(repeating: 0, count: N * C) }
        p?.lap("residual adds")
        try hook(.mlpOut, s.dMlpOut, L.resid)
        s.dMlp.update(repeating: 0, count: N * M)
        matmulBackward(dinp: s.dMlp, dw: gw?.wOut, dbias: gw?.bOut, dout: s.dMlpOut, inp: a.mlpPost, w: w.wOut, N: N, IC: M, OC: C)
        p?.lap("mlp out matmul")
        try hook(.mlpPost, s.dMlp, L.mlp)
        s.dMlpPre.update(repeating: 0, count: N * M)
        geluBackward(dinp: s.dMlpPre, dout: s.dMlp, inp: a.mlpPre, n: N * M)
        p?.lap("gelu_new")
        try hook(.mlpPre, s.dMlpPre, L.mlp)
        s.dLn.update(repeating: 0, count: N * C)
        matmulBackward(dinp: s.dLn, dw: gw?.wIn, dbias: gw?.bIn, dout: s.dMlpPre, inp: a.ln2.out, w: w.wIn, N: N, IC: C, OC: M)
        p?.lap("mlp in matmul")
        // d resid_mid = d resid_post + the ln2 path.
        try layerNormBackward(a.ln2, input: a.residMid, dOut: s.dLn, dInput: s.dResid, w: folded ? nil : w.ln2W,
                              dw: folded ? nil : gw?.ln2W, db: folded ? nil : gw?.ln2B, scale: lns.ln2,
                              freeze: options.freezeLNScale, scaleHook: h(.ln2Scale), normalizedHook: h(.ln2Normalized),
                              pass, s, &runner, p)
        try hook(.residMid, s.dResid, L.resid)

        // Attention: d attn_out = d resid_mid.
        s.dAttnOut.update(from: s.dResid, count: N * C)
        if drop { s.dAttnOut.update(repeating: 0, count: N * C) }
        p?.lap("residual adds")
        try hook(.attnOut, s.dAttnOut, L.resid)
        s.dz.update(repeating: 0, count: N * C)
        // Each head's output receives d attn_out (attn_out is their sum): (N, NH, C).
        func perHead() -> [Float] {
            [Float](unsafeUninitializedCapacity: N * NH * C) { buffer, count in
                broadcastHeads(into: buffer.baseAddress!, from: s.dAttnOut, N: N, C: C, NH: NH)
                count = N * NH * C
            }
        }
        if pass.resultIntervened.contains(l) {
            // The head outputs were changed: the interventions' derivatives apply per head, then
            // W_O per head.
            var dResult = perHead()
            try dResult.withUnsafeMutableBufferPointer { (dr) throws(GPT2Error) in
                try hook(.result, dr.baseAddress!, L.result)
                headOutputBackward(dz: s.dz, dwO: gw?.wO, dresult: dr.baseAddress!, z: a.z, wO: w.wO, N: N, C: C, NH: NH)
            }
            if let db = gw?.bO { for n in 0..<N { for c in 0..<C { db[c] += s.dAttnOut[n * C + c] } } }
        } else {
            // Unchanged head outputs: hook_result's gradient is d attn_out per head, and one
            // product with W_O gives d z for all heads.
            if runner.gradNames.contains(h(.result)) {
                runner.grads[h(.result)] = Tensor(shape: [B, T, NH, C], data: perHead())
                p?.lap("hook gradients")
            }
            matmulBackward(dinp: s.dz, dw: gw?.wO, dbias: gw?.bO, dout: s.dAttnOut, inp: a.z, w: w.wO, N: N, IC: C, OC: C)
        }
        p?.lap("attn out matmul")
        try hook(.z, s.dz, L.z)
        s.dqkv.update(repeating: 0, count: N * 3 * C)
        attentionValuesBackward(dpattern: s.datt, dqkv: s.dqkv, dz: s.dz, pattern: a.att, qkv: a.qkv, B: B, T: T, C: C, NH: NH)
        p?.lap("attention values")
        try hook(.pattern, s.datt, L.attn)
        if let softmaxOut = pass.patternBeforeIntervention[l] {
            softmaxBackward(dx: s.datt, dp: s.datt, p: softmaxOut, rows: B * NH * T, cols: T)
        } else {
            softmaxBackward(dx: s.datt, dp: s.datt, p: a.att, rows: B * NH * T, cols: T)
        }
        p?.lap("softmax")
        try hook(.attnScores, s.datt, L.attn)
        attentionScoresBackward(dqkv: s.dqkv, datt: s.datt, qkv: a.qkv, B: B, T: T, C: C, NH: NH, alpha: attentionScale(layer: l))
        p?.lap("attention scores")
        try hook(.q, s.dqkv, L.qkv(part: 0))
        try hook(.k, s.dqkv, L.qkv(part: 1))
        try hook(.v, s.dqkv, L.qkv(part: 2))
        // d resid_pre = d resid_mid + the ln1 path(s).
        s.dLn.update(repeating: 0, count: N * C)
        if let v = a.ln1V {
            matmulBackward(dinp: s.dLn, dw: gw?.wQKV, dbias: gw?.bQKV, dout: s.dqkv, inp: a.ln1.out, w: w.wQKV, N: N, IC: C,
                           OC: 2 * C, ldw: 3 * C, lddout: 3 * C)
            s.dLnV.update(repeating: 0, count: N * C)
            matmulBackward(dinp: s.dLnV, dw: gw.map { $0.wQKV + 2 * C }, dbias: gw.map { $0.bQKV + 2 * C }, dout: s.dqkv + 2 * C,
                           inp: v.out, w: w.wQKV + 2 * C, N: N, IC: C, OC: C, ldw: 3 * C, lddout: 3 * C)
            p?.lap("qkv matmul")
            try layerNormBackward(v, input: a.residPre, dOut: s.dLnV, dInput: s.dResid, w: folded ? nil : w.ln1W,
                                  dw: folded ? nil : gw?.ln1W, db: folded ? nil : gw?.ln1B, scale: lns.ln1V,
                                  freeze: options.freezeLNScale, scaleHook: nil, normalizedHook: nil, pass, s, &runner, p)
        } else {
            matmulBackward(dinp: s.dLn, dw: gw?.wQKV, dbias: gw?.bQKV, dout: s.dqkv, inp: a.ln1.out, w: w.wQKV, N: N, IC: C, OC: 3 * C)
            p?.lap("qkv matmul")
        }
        try layerNormBackward(a.ln1, input: a.residPre, dOut: s.dLn, dInput: s.dResid, w: folded ? nil : w.ln1W,
                              dw: folded ? nil : gw?.ln1W, db: folded ? nil : gw?.ln1B, scale: lns.ln1,
                              freeze: options.freezeLNScale, scaleHook: h(.ln1Scale), normalizedHook: h(.ln1Normalized),
                              pass, s, &runner, p)
        try hook(.residPre, s.dResid, L.resid)
    }

    /// A LayerNorm in reverse, accumulating d input into `dInput`. `dOut` (the gradient at
    /// `hook_normalized`) is overwritten.
    func layerNormBackward(_ a: LayerNormActivations, input x: FloatPointer, dOut: FloatPointer, dInput: FloatPointer,
                           w: FloatPointer?, dw: FloatPointer?, db: FloatPointer?, scale: LayerNormScale, freeze: Bool,
                           scaleHook: HookName?, normalizedHook: HookName?, _ pass: ForwardPass, _ s: BackwardScratch,
                           _ runner: inout HookRunner, _ p: PhaseTimes?) throws(GPT2Error) {
        let L = layouts(pass), N = pass.N, C = config.dModel
        if let normalizedHook {
            try runner.backward(normalizedHook, dOut, L.resid)
            p?.lap("hook gradients")
        }
        layerNormApplyBackward(dxhat: dOut, dscale: s.dScale, dw: w == nil ? nil : dw, db: w == nil ? nil : db, dout: dOut,
                               x: x, mean: a.mean, scale: a.scale, w: w, N: N, C: C)
        p?.lap("layernorm")
        if let scaleHook {
            try runner.backward(scaleHook, s.dScale, L.scale)
            p?.lap("hook gradients")
        }
        var dependsOnInput = !freeze
        if case .fixed = scale { dependsOnInput = false }
        layerNormStatsBackward(dx: dInput, dxhat: dOut, dscale: s.dScale, x: x, mean: a.mean, scale: a.scale,
                               rawScale: a.rawScale, scaleDependsOnInput: dependsOnInput, N: N, C: C)
        p?.lap("layernorm")
    }
}

/// Gradient buffers one backward pass reuses from block to block.
final class BackwardScratch {
    let arena: Arena
    let dResid: FloatPointer     // (N, C) the residual stream's gradient
    let dLn: FloatPointer        // (N, C) a LayerNorm output's gradient
    let dLnV: FloatPointer       // (N, C) the values' LayerNorm (split ln_1)
    let dAttnOut: FloatPointer   // (N, C)
    let dMlpOut: FloatPointer    // (N, C)
    let dz: FloatPointer         // (N, C)
    let dqkv: FloatPointer       // (N, 3C)
    let datt: FloatPointer       // (B, NH, T, T)
    let dMlp: FloatPointer       // (N, M) d mlp_post
    let dMlpPre: FloatPointer    // (N, M)
    let dScale: FloatPointer     // (N)

    let pool: ArenaPool?

    /// The views of the scratch arena for B × T tokens, in the order `init` takes them.
    static func sizes(B: Int, T: Int, config: GPT2Config) -> [Int] {
        let N = B * T, C = config.dModel, M = config.dMLP, att = B * config.nHeads * T * T
        return [N * C, N * C, N * C, N * C, N * C, N * C, 3 * N * C, att, N * M, N * M, N]
    }

    init(pass: ForwardPass, config: GPT2Config) throws(GPT2Error) {
        let N = pass.N, C = config.dModel, M = config.dMLP, att = pass.B * config.nHeads * pass.T * pass.T
        let capacity = Arena.footprint(Self.sizes(B: pass.B, T: pass.T, config: config))
        pool = pass.pool
        arena = try allocate(capacity, pass.pool)
        dResid = arena.take(N * C)
        dLn = arena.take(N * C)
        dLnV = arena.take(N * C)
        dAttnOut = arena.take(N * C)
        dMlpOut = arena.take(N * C)
        dz = arena.take(N * C)
        dqkv = arena.take(3 * N * C)
        datt = arena.take(att)
        dMlp = arena.take(N * M)
        dMlpPre = arena.take(N * M)
        dScale = arena.take(N)
    }

    /// Gives the buffers back to the pass's pool (if any).
    func release() { pool?.recycle(arena) }
}
