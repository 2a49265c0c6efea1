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
    /// Differentiate the linearised variant frozen at this pass (`Freeze`): `.ln` as
    /// `freezeLNScale`; `.attention` passes no gradient through the patterns (a constant: the
    /// gradient at `hook_pattern`, `hook_attn_scores`, and through them to q and k, is 0); `.mlp`
    /// changes nothing (GELU's tangent at the pass's own pre-activations has GELU's derivative).
    public var freeze: Freeze = []
    /// Whether every LayerNorm scale is a constant (`freezeLNScale` or `freeze` has `.ln`).
    var constantLNScale: Bool { freezeLNScale || freeze.contains(.ln) }
    /// Drop the gradient through blocks' residual contributions (their attn_out and mlp_out): what
    /// reaches the sites upstream then comes only through the other paths (AtP*'s GradDrop).
    public var dropResidualContributions: Set<Int> = []
    /// Added to d metric / d (raw scale of ln_final's input), per row (N): an auxiliary loss on σ.
    public var finalRawScaleGradient: [Float]? = nil
    /// Multiplies the metric's gradient (a loss weight).
    public var metricScale: Float = 1
    /// For `.loss`: the predictions of this token id leave the loss (labels −100 in transformers;
    /// the companion's collator masks `<|endoftext|>` targets so).
    public var lossIgnoredTarget: Int? = nil
    /// Accumulates the time of each phase of the backward (the benchmark's `--profile`).
    public var profile: PhaseTimes? = nil
    /// Called with `l` once block `l`'s parameter gradients are complete (blocks run last to
    /// first): data-parallel training starts reducing them while the blocks below run back.
    public var blockDone: ((Int) -> Void)? = nil

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

/// A metric's values on a pass and its gradient with respect to the logits it reads.
struct MetricGradient {
    /// Per prompt, and the scalar differentiated (their sum, or the mean loss).
    var values: [Double]
    var total: Double
    /// The rows n = b·T + t of the residual stream whose logits the metric reads.
    var rows: [Int]
    /// d metric / d logits of those rows, `(rows.count, V)`.
    let dlogits: Arena
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
        var runner = pass.runner
        runner.profile = options.profile
        options.profile?.start()
        let seed = try metricGradient(pass, metric, scale: options.metricScale, ignoring: options.lossIgnoredTarget)
        defer { pass.pool?.recycle(seed.dlogits) }
        runner.endPhase("metric")
        let scratch = try BackwardScratch(pass: pass, config: config)
        defer { scratch.release() }
        try finalBackward(pass, seed, scratch, &runner, options)
        for l in stride(from: config.nLayers - 1, through: 0, by: -1) {
            try mlpBackward(l, pass, scratch, &runner, options)
            try attentionBackward(l, pass, scratch, &runner, options)
            options.blockDone?(l)
        }
        try embeddingsBackward(pass, scratch, &runner, options.parameterGradients)
        return BackwardResult(metric: seed.values, total: seed.total, hookGradients: runner.grads)
    }

    /// The metric of each prompt of `pass` and its gradient (times `scale`) with respect to the
    /// logits it reads: every row for the loss (without the targets `ignoring`), each prompt's
    /// last for a logit metric.
    func metricGradient(_ pass: ForwardPass, _ metric: Metric, scale: Float, ignoring: Int? = nil) throws(GPT2Error) -> MetricGradient {
        let V = config.dVocab, R = pass.logitRows.count
        let (answer, wrong): ([Int], [Int]?)
        switch metric {
        case .loss:
            guard R == pass.N else { throw .metricNeedsLogits(metric: metric.name, positions: "all") }
            let dlogits = try allocate(R * V, pass.pool)
            let ce = crossEntropy(logits: pass.logits, tokens: pass.tokens, V: V, dlogits: dlogits.base, scale: scale, ignoreTarget: ignoring)
            return MetricGradient(values: ce.perPrompt, total: ce.mean, rows: pass.logitRows, dlogits: dlogits)
        case let .logitDifference(a, w): (answer, wrong) = (a, w)
        case let .logit(a): (answer, wrong) = (a, nil)
        }
        guard answer.count == pass.B, (wrong?.count ?? pass.B) == pass.B else {
            throw .metricNeedsLogits(metric: "\(metric.name) with one answer per prompt", positions: "the last")
        }
        for id in answer + (wrong ?? []) where id < 0 || id >= V { throw .tokenOutOfVocabulary(what: "metric", id: id, dVocab: V) }
        // Each prompt's last position: its row of logits.
        let last = (0..<pass.B).map { b in pass.logitRows.firstIndex(of: b * pass.T + pass.T - 1) ?? -1 }
        guard !last.contains(-1) else { throw .metricNeedsLogits(metric: metric.name, positions: "the last") }
        var lastLogits = [Float](repeating: 0, count: pass.B * V)
        for (b, r) in last.enumerated() {
            for v in 0..<V { lastLogits[b * V + v] = pass.logits[r * V + v] }
        }
        let values = logitDifferenceForward(logits: lastLogits, answer: answer, wrong: wrong, V: V)
        let dlogits = try allocate(pass.B * V, pass.pool)
        logitDifferenceBackward(dlogits: dlogits.base, answer: answer, wrong: wrong, V: V, scale: scale)
        return MetricGradient(values: values, total: values.reduce(0, +), rows: last.map { pass.logitRows[$0] }, dlogits: dlogits)
    }

    /// The unembedding (at the rows the metric reads only) and ln_final in reverse: on exit
    /// `s.dResid` holds d resid_post of the last block.
    func finalBackward(_ pass: ForwardPass, _ seed: MetricGradient, _ s: BackwardScratch, _ runner: inout HookRunner,
                       _ options: BackwardOptions) throws(GPT2Error) {
        let N = pass.N, C = config.dModel, g = options.parameterGradients
        s.dLn.update(repeating: 0, count: N * C)
        unembedRowsBackward(dx: s.dLn, dwU: g?.wU, dbU: g?.bU, dlogits: seed.dlogits.base, x: pass.lnF.out, rows: seed.rows,
                            wU: parameters.wU, C: C, V: config.dVocab)
        s.dResid.update(repeating: 0, count: N * C)
        try layerNormBackward(pass.lnF, input: pass.residFinal, dOut: s.dLn, dInput: s.dResid, weights: parameters.lnF,
                              gradients: g?.lnF, scale: pass.plan.final, freeze: options.constantLNScale,
                              hooks: (HookName(.lnFinalScale), HookName(.lnFinalNormalized)), pass.rows, s, &runner)
        if let extra = options.finalRawScaleGradient {
            extra.withUnsafeBufferPointer {
                rawScaleBackward(dx: s.dResid, dRawScale: $0.baseAddress!, x: pass.residFinal, mean: pass.lnF.mean,
                                 rawScale: pass.lnF.rawScale, N: N, C: C)
            }
        }
    }

    /// Block `l`'s MLP half in reverse. On entry `s.dResid` holds d resid_post (before its hook);
    /// on exit, d resid_mid.
    func mlpBackward(_ l: Int, _ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                     _ options: BackwardOptions) throws(GPT2Error) {
        let a = pass.block(l), w = parameters.blocks[l], gw = options.parameterGradients?.blocks[l], L = pass.rows.layouts
        let N = pass.N, C = config.dModel, M = config.dMLP
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        try runner.backward(h(.residPost), s.dResid, L.resid)
        branchGradient(s.dMlpOut, s, layer: l, options, n: N * C)
        try runner.backward(h(.mlpOut), s.dMlpOut, L.resid)
        if let mask = pass.rows.dropout?.mask(.mlpOutput, layer: l) { mask.apply(out: s.dMlpOut, inp: s.dMlpOut, n: N * C) }
        s.dMlp.update(repeating: 0, count: N * M)
        matmulBackward(dinp: s.dMlp, dw: gw?.wOut, dbias: gw?.bOut, dout: s.dMlpOut, inp: a.mlpPost, w: w.wOut, N: N, IC: M, OC: C)
        try runner.backward(h(.mlpPost), s.dMlp, L.mlp)
        s.dMlpPre.update(repeating: 0, count: N * M)
        geluBackward(dinp: s.dMlpPre, dout: s.dMlp, inp: a.mlpPre, n: N * M)
        try runner.backward(h(.mlpPre), s.dMlpPre, L.mlp)
        s.dLn.update(repeating: 0, count: N * C)
        matmulBackward(dinp: s.dLn, dw: gw?.wIn, dbias: gw?.bIn, dout: s.dMlpPre, inp: a.ln2.out, w: w.wIn, N: N, IC: C, OC: M)
        // d resid_mid = d resid_post + the ln_2 path.
        try layerNormBackward(a.ln2, input: a.residMid, dOut: s.dLn, dInput: s.dResid, weights: w.ln2, gradients: gw?.ln2,
                              scale: pass.plan.blocks[l].ln2, freeze: options.constantLNScale,
                              hooks: (h(.ln2Scale), h(.ln2Normalized)), pass.rows, s, &runner)
        try runner.backward(h(.residMid), s.dResid, L.resid)
    }

    /// Block `l`'s attention half in reverse. On entry `s.dResid` holds d resid_mid (before its
    /// interventions); on exit, d resid_pre before its interventions (d resid_post of the block below).
    func attentionBackward(_ l: Int, _ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                           _ options: BackwardOptions) throws(GPT2Error) {
        let a = pass.block(l), L = pass.rows.layouts
        let N = pass.N, C = config.dModel, NH = config.nHeads, B = pass.B, T = pass.T
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        branchGradient(s.dAttnOut, s, layer: l, options, n: N * C)
        try runner.backward(h(.attnOut), s.dAttnOut, L.resid)
        if let mask = pass.rows.dropout?.mask(.attentionOutput, layer: l) { mask.apply(out: s.dAttnOut, inp: s.dAttnOut, n: N * C) }
        s.dz.update(repeating: 0, count: N * C)
        try headOutputsBackward(l, pass, s, &runner, options.parameterGradients?.blocks[l])
        try runner.backward(h(.z), s.dz, L.z)
        s.dqkv.update(repeating: 0, count: N * 3 * C)
        if let mask = pass.rows.dropout?.mask(.attention, layer: l), let dropped = pass.rows.droppedPattern {
            // The values read the dropped pattern (regenerated); its gradient reaches the pattern through the mask.
            mask.apply(out: dropped, inp: a.att, n: B * NH * T * T)
            attentionValuesBackward(dpattern: s.datt, dqkv: s.dqkv, dz: s.dz, pattern: dropped, qkv: a.qkv, B: B, T: T, C: C, NH: NH)
            mask.apply(out: s.datt, inp: s.datt, n: B * NH * T * T)
        } else {
            attentionValuesBackward(dpattern: s.datt, dqkv: s.dqkv, dz: s.dz, pattern: a.att, qkv: a.qkv, B: B, T: T, C: C, NH: NH)
        }
        let frozenPattern = options.freeze.contains(.attention)
        // A frozen pattern is a constant: no gradient at it, nor through it to the scores, q and k.
        if frozenPattern { s.datt.update(repeating: 0, count: B * NH * T * T) }
        try runner.backward(h(.pattern), s.datt, L.attn)
        if frozenPattern {
            // Nothing flows through a constant.
        } else if let softmaxOut = runner.beforeInterventions[h(.pattern)] {
            // The pattern was changed: the softmax's backward needs its own output.
            softmaxBackward(dx: s.datt, dp: s.datt, p: softmaxOut, rows: B * NH * T, cols: T)
        } else {
            softmaxBackward(dx: s.datt, dp: s.datt, p: a.att, rows: B * NH * T, cols: T)
        }
        try runner.backward(h(.attnScores), s.datt, L.attn)
        if !frozenPattern {
            attentionScoresBackward(dqkv: s.dqkv, datt: s.datt, qkv: a.qkv, B: B, T: T, C: C, NH: NH, alpha: attentionScale(layer: l))
        }
        try runner.backward(h(.q), s.dqkv, L.qkv(part: 0))
        try runner.backward(h(.k), s.dqkv, L.qkv(part: 1))
        try runner.backward(h(.v), s.dqkv, L.qkv(part: 2))
        try qkvBackward(l, pass, s, &runner, options)
        try runner.backward(h(.residPre), s.dResid, L.resid)
    }

    /// A residual branch's output gets the gradient of the sum (`s.dResid`: the residual add
    /// passes it to both), or none where GradDrop drops block `l`'s contributions.
    func branchGradient(_ out: FloatPointer, _ s: BackwardScratch, layer l: Int, _ options: BackwardOptions, n: Int) {
        if options.dropResidualContributions.contains(l) {
            out.update(repeating: 0, count: n)
        } else {
            out.update(from: s.dResid, count: n)
        }
    }

    /// d attn_out through W_O into `s.dz`. When `hook_result` was changed, per head (its
    /// interventions' derivatives apply per head); otherwise one product for all heads, and
    /// `hook_result`'s gradient (d attn_out for every head) only if asked for.
    func headOutputsBackward(_ l: Int, _ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                             _ gw: BlockParameters?) throws(GPT2Error) {
        let a = pass.block(l), w = parameters.blocks[l], N = pass.N, C = config.dModel, NH = config.nHeads
        let name = HookName(.result, layer: l)
        func perHead() -> [Float] {
            [Float](unsafeUninitializedCapacity: N * NH * C) { buffer, count in
                broadcastHeads(into: buffer.baseAddress!, from: s.dAttnOut, N: N, C: C, NH: NH)
                count = N * NH * C
            }
        }
        if runner.hasIntervention(name) {
            var dResult = perHead()
            try dResult.withUnsafeMutableBufferPointer { (dr) throws(GPT2Error) in
                try runner.backward(name, dr.baseAddress!, pass.rows.layouts.result)
                headOutputBackward(dz: s.dz, dwO: gw?.wO, dresult: dr.baseAddress!, z: a.z, wO: w.wO, N: N, C: C, NH: NH)
            }
            matmulBackward(dinp: nil, dw: nil, dbias: gw?.bO, dout: s.dAttnOut, inp: a.z, w: w.wO, N: N, IC: C, OC: C)
        } else {
            runner.cacheGradient(name) { Tensor(shape: [pass.B, pass.T, NH, C], data: perHead()) }
            matmulBackward(dinp: s.dz, dw: gw?.wO, dbias: gw?.bO, dout: s.dAttnOut, inp: a.z, w: w.wO, N: N, IC: C, OC: C)
        }
    }

    /// d q k v through W_QKV and ln_1 (and the values' own LayerNorm when ln_1 is split),
    /// accumulated into d resid_pre (`s.dResid`, which holds d resid_mid on entry).
    func qkvBackward(_ l: Int, _ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                     _ options: BackwardOptions) throws(GPT2Error) {
        let a = pass.block(l), w = parameters.blocks[l], gw = options.parameterGradients?.blocks[l], lns = pass.plan.blocks[l]
        let N = pass.N, C = config.dModel
        s.dLn.update(repeating: 0, count: N * C)
        if let v = a.ln1V {
            matmulBackward(dinp: s.dLn, dw: gw?.wQKV, dbias: gw?.bQKV, dout: s.dqkv, inp: a.ln1.out, w: w.wQKV, N: N, IC: C,
                           OC: 2 * C, ldw: 3 * C, lddout: 3 * C)
            s.dLnV.update(repeating: 0, count: N * C)
            matmulBackward(dinp: s.dLnV, dw: gw.map { $0.wQKV + 2 * C }, dbias: gw.map { $0.bQKV + 2 * C }, dout: s.dqkv + 2 * C,
                           inp: v.out, w: w.wQKV + 2 * C, N: N, IC: C, OC: C, ldw: 3 * C, lddout: 3 * C)
            try layerNormBackward(v, input: a.residPre, dOut: s.dLnV, dInput: s.dResid, weights: w.ln1, gradients: gw?.ln1,
                                  scale: lns.ln1V, freeze: options.constantLNScale, hooks: nil, pass.rows, s, &runner)
        } else {
            matmulBackward(dinp: s.dLn, dw: gw?.wQKV, dbias: gw?.bQKV, dout: s.dqkv, inp: a.ln1.out, w: w.wQKV, N: N, IC: C, OC: 3 * C)
        }
        try layerNormBackward(a.ln1, input: a.residPre, dOut: s.dLn, dInput: s.dResid, weights: w.ln1, gradients: gw?.ln1,
                              scale: lns.ln1, freeze: options.constantLNScale, hooks: (HookName(.ln1Scale, layer: l),
                              HookName(.ln1Normalized, layer: l)), pass.rows, s, &runner)
    }

    /// d resid_pre of block 0 is d (embed + pos_embed): through their hooks into the tables.
    func embeddingsBackward(_ pass: ForwardPass, _ s: BackwardScratch, _ runner: inout HookRunner,
                            _ g: ModelParameters?) throws(GPT2Error) {
        let N = pass.N, C = config.dModel, L = pass.rows.layouts
        let dEmbed = s.dLn, dPos = s.dAttnOut
        if let mask = pass.rows.dropout?.mask(.embedding) { mask.apply(out: s.dResid, inp: s.dResid, n: N * C) }
        dEmbed.update(from: s.dResid, count: N * C)
        dPos.update(from: s.dResid, count: N * C)
        try runner.backward(.posEmbed(), dPos, L.resid)
        try runner.backward(.embed(), dEmbed, L.resid)
        if let g {
            embeddingBackward(dtable: g.wE, dout: dEmbed, ids: pass.tokens.flatMap { $0 }, C: C)
            embeddingBackward(dtable: g.wPos, dout: dPos, ids: (0..<pass.B).flatMap { _ in Array(0..<pass.T) }, C: C)
        }
        runner.endPhase("embed")
    }

    /// A LayerNorm in reverse, accumulating d input into `dInput`. `dOut` (the gradient at
    /// `hook_normalized`) is overwritten. `weights` nil: folded (no affine part, no gradients).
    func layerNormBackward(_ a: LayerNormActivations, input x: FloatPointer, dOut: FloatPointer, dInput: FloatPointer,
                           weights: LayerNormWeights?, gradients: LayerNormWeights?, scale: LayerNormScale, freeze: Bool,
                           hooks: (scale: HookName, normalized: HookName)?, _ rows: Rows, _ s: BackwardScratch,
                           _ runner: inout HookRunner) throws(GPT2Error) {
        let N = rows.N, C = config.dModel
        if let hooks { try runner.backward(hooks.normalized, dOut, rows.layouts.resid) }
        layerNormApplyBackward(dxhat: dOut, dscale: s.dScale, dw: weights == nil ? nil : gradients?.w,
                               db: weights == nil ? nil : gradients?.b, dout: dOut, x: x, mean: a.mean, scale: a.scale,
                               w: weights?.w, N: N, C: C)
        if let hooks { try runner.backward(hooks.scale, s.dScale, rows.layouts.scale) }
        var dependsOnInput = !freeze
        if case .fixed = scale { dependsOnInput = false }
        layerNormStatsBackward(dx: dInput, dxhat: dOut, dscale: s.dScale, x: x, mean: a.mean, scale: a.scale,
                               rawScale: a.rawScale, scaleDependsOnInput: dependsOnInput, N: N, C: C)
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
