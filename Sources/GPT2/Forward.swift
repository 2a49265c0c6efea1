import Foundation
import Support
import TensorCore

/// Which positions get logits; the unembedding is the largest matrix product, so analyses that
/// read only the last position ask for `.last`.
public enum LogitPositions: Sendable { case all, last, none }

/// How each LayerNorm of a pass divides (training replaces them one by one with FakeLN).
/// `ln1V` differs from `ln1` only while removal has reached one path of `ln_1` but not the other:
/// then the values read a LayerNorm of their own (the paper removes `ln_1` for Q/K before V).
public struct LayerNormPlan: Sendable, Equatable {
    public struct Block: Sendable, Equatable {
        public var ln1: LayerNormScale
        public var ln1V: LayerNormScale
        public var ln2: LayerNormScale
        public init(ln1: LayerNormScale, ln1V: LayerNormScale, ln2: LayerNormScale) {
            self.ln1 = ln1
            self.ln1V = ln1V
            self.ln2 = ln2
        }
    }
    public var blocks: [Block]
    public var final: LayerNormScale
    /// eps of the raw scale `sqrt(var + eps)` each pass records (what FakeLN's σ tracks).
    public var rawEps: Float

    public init(blocks: [Block], final: LayerNormScale, rawEps: Float) {
        self.blocks = blocks
        self.final = final
        self.rawEps = rawEps
    }

    /// Every LayerNorm the same.
    public init(uniform scale: LayerNormScale, nLayers: Int, rawEps: Float) {
        self.init(blocks: Array(repeating: Block(ln1: scale, ln1V: scale, ln2: scale), count: nLayers), final: scale,
                  rawEps: rawEps)
    }
}

/// What a forward pass is asked to do besides computing the logits.
public struct ForwardOptions: Sendable {
    /// Hooks to cache (TransformerLens names), after interventions.
    public var cache: Set<HookName> = []
    /// Keep only these positions of the cached hooks (nil: all).
    public var cachePositions: [Int]? = nil
    public var interventions: [Intervention] = []
    public var logits: LogitPositions = .all
    /// Keep every block's activations for a backward pass (else one block's buffers are reused).
    public var retainForBackward = false
    /// Overrides the model's LayerNorms (training); nil: the model's own.
    public var layerNorms: LayerNormPlan? = nil
    /// Accumulates the time of each phase (the benchmark's `--profile`).
    public var profile: PhaseTimes? = nil
    /// Where the pass (and its backward) take their buffers from and give them back to when done
    /// (training: the same shapes every step); nil: allocated and freed with the pass.
    public var arenas: ArenaPool? = nil

    public init(cache: Set<HookName> = [], cachePositions: [Int]? = nil, interventions: [Intervention] = [],
                logits: LogitPositions = .all, retainForBackward: Bool = false, layerNorms: LayerNormPlan? = nil,
                profile: PhaseTimes? = nil) {
        self.cache = cache
        self.cachePositions = cachePositions
        self.interventions = interventions
        self.logits = logits
        self.retainForBackward = retainForBackward
        self.layerNorms = layerNorms
        self.profile = profile
    }
}

/// Seconds spent per phase of a pass, for profiling with the real kernels.
public final class PhaseTimes: @unchecked Sendable {
    public private(set) var seconds: [String: Double] = [:]
    private var mark = DispatchTime.now().uptimeNanoseconds
    public init() {}
    /// Starts timing the next phase.
    public func start() { mark = DispatchTime.now().uptimeNanoseconds }
    /// Adds the time since the last mark to `phase`.
    public func lap(_ phase: String) {
        let now = DispatchTime.now().uptimeNanoseconds
        seconds[phase, default: 0] += Double(now - mark) * 1e-9
        mark = now
    }
}

/// A LayerNorm's activations: per-row mean, scale as used (`hook_scale`), raw scale
/// `sqrt(var + eps)` (what the backward differentiates), and output (`hook_normalized`).
public struct LayerNormActivations {
    public let mean: FloatPointer        // (N)
    public let scale: FloatPointer       // (N)
    public let rawScale: FloatPointer    // (N)
    public let out: FloatPointer         // (N, C)
}

/// One block's activations for a batch: views into the pass's arena (N = B·T rows).
public struct BlockActivations {
    public var residPre: FloatPointer    // (N, C)
    public let ln1: LayerNormActivations
    /// The values' own LayerNorm while `ln_1` is removed on one path only; nil otherwise.
    public let ln1V: LayerNormActivations?
    public let qkv: FloatPointer         // (N, 3C) q | k | v
    public let att: FloatPointer         // (B, NH, T, T) the pattern (scores before the softmax)
    public let z: FloatPointer           // (N, C) = (N, NH, dh)
    public let attnOut: FloatPointer     // (N, C)
    public let residMid: FloatPointer    // (N, C)
    public let ln2: LayerNormActivations
    public let mlpPre: FloatPointer      // (N, M)
    public let mlpPost: FloatPointer     // (N, M)
    public let mlpOut: FloatPointer      // (N, C)
    public var residPost: FloatPointer   // (N, C)
}

/// Everything one forward pass computed, in one arena. With `retainForBackward` every block keeps
/// its activations; otherwise one block's buffers are reused and only the residual stream
/// alternates between two buffers, so only the cache, the final LayerNorm and the logits remain.
public final class ForwardPass: @unchecked Sendable {
    public let tokens: [[Int]]
    public let B: Int, T: Int
    public var N: Int { B * T }
    let arena: Arena
    /// The pool `arena` came from and returns to (`ForwardOptions.arenas`).
    let pool: ArenaPool?
    public let embed: FloatPointer       // (N, C) hook_embed
    public let posEmbed: FloatPointer    // (N, C) hook_pos_embed
    public internal(set) var blocks: [BlockActivations]
    public let lnF: LayerNormActivations
    /// The final residual stream, `resid_post` of the last block.
    public internal(set) var residFinal: FloatPointer
    /// `(R, V)`, R = `logitRows.count`.
    public let logits: FloatPointer
    /// The row n = b·T + t of each logit row.
    public let logitRows: [Int]
    public internal(set) var cache: [HookName: Tensor]
    let runner: HookRunner
    let plan: LayerNormPlan
    let retained: Bool
    /// Per-head outputs of blocks whose `hook_result` was intervened on (their attn_out is the sum).
    var resultIntervened: Set<Int> = []
    /// The softmax's own output of blocks whose `hook_pattern` was intervened on: the softmax's
    /// backward needs it, and the pattern buffer holds the changed values.
    var patternBeforeIntervention: [Int: [Float]] = [:]

    /// The views one pass's arena holds, in the order `init` takes them: B sequences of T tokens,
    /// `logitRows` rows of logits, every block's activations kept (`retained`, for a backward)
    /// or one block's reused, ln_1 planned once or twice (`splitLN1`).
    static func arenaSizes(B: Int, T: Int, config cfg: GPT2Config, logitRows: Int, retained: Bool, splitLN1: Bool) -> [Int] {
        let N = B * T, C = cfg.dModel, M = cfg.dMLP, V = cfg.dVocab, NH = cfg.nHeads
        let lnSize = [N, N, N, N * C]
        let perBlock = lnSize + (splitLN1 ? lnSize : []) + [3 * N * C, B * NH * T * T, N * C, N * C, N * C] + lnSize
            + [N * M, N * M, N * C, N * C]
        var sizes = [N * C, N * C, N * C, N * C] + lnSize + [logitRows * V]
        for _ in 0..<(retained ? cfg.nLayers : 1) { sizes += perBlock }
        return sizes
    }

    /// Bytes of the arenas of one forward pass over B × T tokens with every logit (and, with
    /// `backward`, every activation kept, the backward's scratch and d logits): what a job checks
    /// against the machine's memory before it starts (`MemoryBudget`).
    public static func footprint(B: Int, T: Int, config cfg: GPT2Config, backward: Bool) -> Int {
        var floats = Arena.footprint(arenaSizes(B: B, T: T, config: cfg, logitRows: B * T, retained: backward, splitLN1: true))
        if backward { floats += B * T * cfg.dVocab + Arena.footprint(BackwardScratch.sizes(B: B, T: T, config: cfg)) }
        return floats * MemoryLayout<Float>.stride
    }

    init(tokens: [[Int]], config cfg: GPT2Config, options: ForwardOptions, runner: HookRunner, plan: LayerNormPlan) throws(GPT2Error) {
        let B = tokens.count, T = tokens[0].count
        self.tokens = tokens
        self.B = B
        self.T = T
        let N = B * T, C = cfg.dModel, M = cfg.dMLP, V = cfg.dVocab, NH = cfg.nHeads
        logitRows = switch options.logits {
        case .all: Array(0..<N)
        case .last: (0..<B).map { $0 * T + T - 1 }
        case .none: []
        }
        retained = options.retainForBackward
        let split = plan.blocks.contains { $0.ln1 != $0.ln1V }
        let sizes = Self.arenaSizes(B: B, T: T, config: cfg, logitRows: logitRows.count, retained: retained, splitLN1: split)
        pool = options.arenas
        arena = try allocate(Arena.footprint(sizes), options.arenas)
        embed = arena.take(N * C)
        posEmbed = arena.take(N * C)
        let streamA = arena.take(N * C), streamB = arena.take(N * C)
        let a = arena
        func ln() -> LayerNormActivations {
            LayerNormActivations(mean: a.take(N), scale: a.take(N), rawScale: a.take(N), out: a.take(N * C))
        }
        lnF = ln()
        logits = arena.take(logitRows.count * V)
        var blocks: [BlockActivations] = []
        for l in 0..<(retained ? cfg.nLayers : 1) {
            let l1 = ln()
            let l1v = split ? ln() : nil
            let qkv = a.take(3 * N * C), att = a.take(B * NH * T * T), z = a.take(N * C), attnOut = a.take(N * C)
            let residMid = a.take(N * C)
            let l2 = ln()
            let pre = a.take(N * M), post = a.take(N * M), mlpOut = a.take(N * C), residPost = a.take(N * C)
            // Retained: block l reads the previous block's resid_post; reused: two buffers alternate.
            let residPre = retained ? (l == 0 ? streamA : blocks[l - 1].residPost) : streamA
            blocks.append(BlockActivations(residPre: residPre, ln1: l1, ln1V: l1v, qkv: qkv, att: att, z: z, attnOut: attnOut,
                                           residMid: residMid, ln2: l2, mlpPre: pre, mlpPost: post, mlpOut: mlpOut,
                                           residPost: retained ? residPost : streamB))
        }
        self.blocks = blocks
        residFinal = streamA
        cache = [:]
        self.runner = runner
        self.plan = plan
    }

    deinit { pool?.recycle(arena) }

    /// Block `l`'s activations (the reused buffers, with the residual stream in place, when not retained).
    func block(_ l: Int) -> BlockActivations {
        if retained { return blocks[l] }
        var b = blocks[0]
        if l % 2 == 1 { swap(&b.residPre, &b.residPost) }
        return b
    }

    /// The logits as a tensor `[B, R/B, V]`.
    public func logitsTensor(V: Int) -> Tensor {
        let rows = logitRows.count
        return Tensor(shape: [B, rows / max(B, 1), V], data: Array(UnsafeBufferPointer(start: logits, count: rows * V)))
    }
}

/// The output of `GPT2Model.forward`.
public struct ForwardResult: Sendable {
    public let tokens: [[Int]]
    /// `[B, T, V]` for `.all`, `[B, 1, V]` for `.last`, `[B, 0, V]` for `.none`.
    public let logits: Tensor
    /// The requested hooks, under TransformerLens names and shapes (after interventions).
    public let cache: [HookName: Tensor]
    /// The pass itself (activations, for a backward pass or an analysis that reads them).
    public let pass: ForwardPass
}

/// A GPT-2 ready to run: config, LN mode and (processed) parameters.
public final class GPT2Model: @unchecked Sendable {
    // @unchecked: the parameters are read by passes and written only by an optimizer step, never both at once.
    public let config: GPT2Config
    public let lnMode: LNMode
    public let processing: ProcessingOptions
    public let parameters: ModelParameters
    /// XXH64 content hash of the checkpoint's weights (nil for a model built in memory).
    public let weightsHash: String?

    /// Reads a verified checkpoint's weights into one buffer (releasing the mapped file as it goes)
    /// and applies `processing`. As in transformers, a stored `lm_head.weight` is W_U only when
    /// `tie_word_embeddings` is false.
    public init(checkpoint: Checkpoint, processing: ProcessingOptions = .all) throws {
        let table = ParameterTable(config: checkpoint.config, storedLMHead: checkpoint.hasUntiedUnembedding,
                                   separateUnembedding: !processing.isNone)
        let parameters = try ModelParameters(table: table)
        weightsHash = try checkpoint.load(into: parameters)
        parameters.process(processing)
        config = checkpoint.config
        lnMode = checkpoint.config.lnMode
        self.processing = processing
        self.parameters = parameters
    }

    /// A model around parameters already in memory (laid out for `config`), processed with
    /// `processing` here unless `alreadyProcessed`.
    public init(config: GPT2Config, parameters: ModelParameters, processing: ProcessingOptions = .none,
                alreadyProcessed: Bool = false, weightsHash: String? = nil) {
        if !alreadyProcessed { parameters.process(processing) }
        self.config = config
        self.lnMode = config.lnMode
        self.processing = processing
        self.parameters = parameters
        self.weightsHash = weightsHash
    }

    /// LayerNorm weights and biases are folded into the next layer: LNs only centre and normalise.
    public var lnFolded: Bool { processing.foldLN }

    /// The denominator of every LayerNorm: `sqrt(var + eps)`, or the constant `sqrt(eps)` that an
    /// LN-free checkpoint encodes (its `hook_scale` is that constant at every position).
    public var layerNormScale: LayerNormScale {
        switch lnMode {
        case .layerNorm: .standard(eps: Float(config.layerNormEpsilon))
        case .lnFree: .fixed(Float(config.layerNormEpsilon.squareRoot()))
        }
    }

    /// Every LayerNorm as this model computes it.
    public var layerNormPlan: LayerNormPlan {
        LayerNormPlan(uniform: layerNormScale, nLayers: config.nLayers,
                      rawEps: lnMode == .layerNorm ? Float(config.layerNormEpsilon) : 1e-5)
    }

    /// Validates a batch of token id lists: non-empty, equal lengths, within context and vocabulary.
    public func checkTokens(_ tokens: [[Int]]) throws(GPT2Error) {
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
                        logits: LogitPositions = .all) throws(GPT2Error) -> ForwardResult {
        let pass = try run(tokens, ForwardOptions(cache: cache, interventions: interventions, logits: logits))
        return ForwardResult(tokens: tokens, logits: pass.logitsTensor(V: config.dVocab), cache: pass.cache, pass: pass)
    }

    /// The forward pass as the architecture reads: embeddings, the blocks, the final LayerNorm,
    /// the unembedding. `gradHooks` are the hooks a following backward will cache gradients at.
    public func run(_ tokens: [[Int]], _ options: ForwardOptions, gradHooks: Set<HookName> = []) throws(GPT2Error) -> ForwardPass {
        try checkTokens(tokens)
        for iv in options.interventions {
            if let l = iv.hook.layer, l >= config.nLayers { throw .layerOutOfRange(iv.hook.description, nLayers: config.nLayers) }
        }
        let plan = options.layerNorms ?? layerNormPlan
        var runner = HookRunner(cache: options.cache, cachePositions: options.cachePositions, grads: gradHooks,
                                interventions: options.interventions)
        let pass = try ForwardPass(tokens: tokens, config: config, options: options, runner: runner, plan: plan)
        let L = layouts(pass)
        let p = options.profile
        p?.start()

        embed(pass)
        try runner.forward(.embed(), pass.embed, L.resid)
        try runner.forward(.posEmbed(), pass.posEmbed, L.resid)
        residualForward(out: pass.block(0).residPre, a: pass.embed, b: pass.posEmbed, n: pass.N * config.dModel)
        p?.lap("embed")
        for l in 0..<config.nLayers {
            try block(l, pass, &runner, plan.blocks[l], p)
        }
        pass.residFinal = pass.block(config.nLayers - 1).residPost
        try layerNorm(pass.lnF, input: pass.residFinal, w: lnFolded ? nil : parameters.lnFW, b: lnFolded ? nil : parameters.lnFB,
                      scale: plan.final,
                      rawEps: plan.rawEps, scaleHook: HookName(.lnFinalScale), normalizedHook: HookName(.lnFinalNormalized),
                      pass, &runner)
        p?.lap("layernorm")
        unembed(pass)
        p?.lap("unembed")
        pass.cache = runner.cached
        return pass
    }

    // MARK: The parts of the forward

    func layouts(_ pass: ForwardPass) -> Layouts {
        Layouts(B: pass.B, T: pass.T, C: config.dModel, NH: config.nHeads, dh: config.dHead, M: config.dMLP)
    }

    func embed(_ pass: ForwardPass) {
        embeddingForward(out: pass.embed, ids: pass.tokens.flatMap { $0 }, table: parameters.wE, C: config.dModel)
        let positions = (0..<pass.B).flatMap { _ in Array(0..<pass.T) }
        embeddingForward(out: pass.posEmbed, ids: positions, table: parameters.wPos, C: config.dModel)
    }

    /// Attention scale `1/√dh` (and `1/(l+1)` with `scale_attn_by_inverse_layer_idx`).
    public func attentionScale(layer l: Int) -> Float {
        var alpha = Float(1)
        if config.scaleAttnWeights { alpha /= Float(config.dHead).squareRoot() }
        if config.scaleAttnByInverseLayerIdx { alpha /= Float(l + 1) }
        return alpha
    }

    /// One block: attention then MLP, each added to the residual stream.
    func block(_ l: Int, _ pass: ForwardPass, _ runner: inout HookRunner, _ lns: LayerNormPlan.Block,
               _ p: PhaseTimes?) throws(GPT2Error) {
        let a = pass.block(l), w = parameters.blocks[l], L = layouts(pass)
        let N = pass.N, C = config.dModel, M = config.dMLP, NH = config.nHeads
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        let folded = lnFolded

        try runner.forward(h(.residPre), a.residPre, L.resid)
        try layerNorm(a.ln1, input: a.residPre, w: folded ? nil : w.ln1W, b: folded ? nil : w.ln1B, scale: lns.ln1,
                      rawEps: pass.plan.rawEps, scaleHook: h(.ln1Scale), normalizedHook: h(.ln1Normalized), pass, &runner)
        if let v = a.ln1V {
            try layerNorm(v, input: a.residPre, w: folded ? nil : w.ln1W, b: folded ? nil : w.ln1B, scale: lns.ln1V,
                          rawEps: pass.plan.rawEps, scaleHook: nil, normalizedHook: nil, pass, &runner)
        }
        p?.lap("layernorm")
        if let v = a.ln1V {
            matmulForward(out: a.qkv, inp: a.ln1.out, w: w.wQKV, bias: w.bQKV, N: N, IC: C, OC: 2 * C, ldw: 3 * C, ldout: 3 * C)
            matmulForward(out: a.qkv + 2 * C, inp: v.out, w: w.wQKV + 2 * C, bias: w.bQKV + 2 * C, N: N, IC: C, OC: C,
                          ldw: 3 * C, ldout: 3 * C)
        } else {
            matmulForward(out: a.qkv, inp: a.ln1.out, w: w.wQKV, bias: w.bQKV, N: N, IC: C, OC: 3 * C)
        }
        p?.lap("qkv matmul")
        try runner.forward(h(.q), a.qkv, L.qkv(part: 0))
        try runner.forward(h(.k), a.qkv, L.qkv(part: 1))
        try runner.forward(h(.v), a.qkv, L.qkv(part: 2))

        attentionScoresForward(att: a.att, qkv: a.qkv, B: pass.B, T: pass.T, C: C, NH: NH, alpha: attentionScale(layer: l))
        p?.lap("attention scores")
        try runner.forward(h(.attnScores), a.att, L.attn)
        softmaxForward(out: a.att, x: a.att, rows: pass.B * NH * pass.T, cols: pass.T)
        p?.lap("softmax")
        if pass.retained && runner.hasIntervention(h(.pattern)) {
            pass.patternBeforeIntervention[l] = Array(UnsafeBufferPointer(start: a.att, count: pass.B * NH * pass.T * pass.T))
        }
        try runner.forward(h(.pattern), a.att, L.attn)
        attentionValuesForward(z: a.z, pattern: a.att, qkv: a.qkv, B: pass.B, T: pass.T, C: C, NH: NH)
        p?.lap("attention values")
        try runner.forward(h(.z), a.z, L.z)

        if runner.hasIntervention(h(.result)) {
            // The heads' outputs are changed: attn_out is their sum.
            var result = [Float](repeating: 0, count: N * NH * C)
            try result.withUnsafeMutableBufferPointer { (r) throws(GPT2Error) in
                headOutputForward(result: r.baseAddress!, z: a.z, wO: w.wO, N: N, C: C, NH: NH)
                try runner.forward(h(.result), r.baseAddress!, L.result)
                headSumForward(out: a.attnOut, result: r.baseAddress!, bO: w.bO, N: N, C: C, NH: NH)
            }
            pass.resultIntervened.insert(l)
        } else {
            matmulForward(out: a.attnOut, inp: a.z, w: w.wO, bias: w.bO, N: N, IC: C, OC: C)
            if runner.isActive(h(.result)) {
                // Cached only: computed beside attn_out, which keeps its own arithmetic.
                var result = [Float](repeating: 0, count: N * NH * C)
                try result.withUnsafeMutableBufferPointer { (r) throws(GPT2Error) in
                    headOutputForward(result: r.baseAddress!, z: a.z, wO: w.wO, N: N, C: C, NH: NH)
                    try runner.forward(h(.result), r.baseAddress!, L.result)
                }
            }
        }
        p?.lap("attn out matmul")
        try runner.forward(h(.attnOut), a.attnOut, L.resid)
        residualForward(out: a.residMid, a: a.residPre, b: a.attnOut, n: N * C)
        p?.lap("residual adds")
        try runner.forward(h(.residMid), a.residMid, L.resid)

        try layerNorm(a.ln2, input: a.residMid, w: folded ? nil : w.ln2W, b: folded ? nil : w.ln2B, scale: lns.ln2,
                      rawEps: pass.plan.rawEps, scaleHook: h(.ln2Scale), normalizedHook: h(.ln2Normalized), pass, &runner)
        p?.lap("layernorm")
        matmulForward(out: a.mlpPre, inp: a.ln2.out, w: w.wIn, bias: w.bIn, N: N, IC: C, OC: M)
        p?.lap("mlp in matmul")
        try runner.forward(h(.mlpPre), a.mlpPre, L.mlp)
        geluForward(out: a.mlpPost, inp: a.mlpPre, n: N * M)
        p?.lap("gelu_new")
        try runner.forward(h(.mlpPost), a.mlpPost, L.mlp)
        matmulForward(out: a.mlpOut, inp: a.mlpPost, w: w.wOut, bias: w.bOut, N: N, IC: M, OC: C)
        p?.lap("mlp out matmul")
        try runner.forward(h(.mlpOut), a.mlpOut, L.resid)
        residualForward(out: a.residPost, a: a.residMid, b: a.mlpOut, n: N * C)
        p?.lap("residual adds")
        try runner.forward(h(.residPost), a.residPost, L.resid)
    }

    /// LayerNorm in two steps, as TransformerLens hooks it: `hook_scale` between the statistics
    /// and the normalisation, `hook_normalized` after it.
    func layerNorm(_ a: LayerNormActivations, input x: FloatPointer, w: FloatPointer?, b: FloatPointer?,
                   scale: LayerNormScale, rawEps: Float, scaleHook: HookName?, normalizedHook: HookName?,
                   _ pass: ForwardPass, _ runner: inout HookRunner) throws(GPT2Error) {
        let L = layouts(pass)
        layerNormStats(mean: a.mean, scale: a.scale, rawScale: a.rawScale, x: x, N: pass.N, C: config.dModel,
                       mode: scale, rawEps: rawEps)
        if let scaleHook { try runner.forward(scaleHook, a.scale, L.scale) }
        layerNormApply(out: a.out, x: x, mean: a.mean, scale: a.scale, w: w, b: b, N: pass.N, C: config.dModel)
        if let normalizedHook { try runner.forward(normalizedHook, a.out, L.resid) }
    }

    /// Logits of the requested rows: `ln_final` output · W_Uᵀ + b_U.
    func unembed(_ pass: ForwardPass) {
        let rows = pass.logitRows
        guard !rows.isEmpty else { return }
        let C = config.dModel, V = config.dVocab
        if rows.count == pass.N {
            unembedForward(logits: pass.logits, x: pass.lnF.out, wU: parameters.wU, bU: parameters.bU, R: rows.count, C: C, V: V)
            return
        }
        var x = [Float](repeating: 0, count: rows.count * C)
        x.withUnsafeMutableBufferPointer { xp in
            for (i, r) in rows.enumerated() { (xp.baseAddress! + i * C).update(from: pass.lnF.out + r * C, count: C) }
            unembedForward(logits: pass.logits, x: xp.baseAddress!, wU: parameters.wU, bU: parameters.bU, R: rows.count,
                           C: C, V: V)
        }
    }
}

/// An arena for a pass (from `pool` when there is one); a machine without the memory is
/// `GPT2Error.outOfMemory`, never an abort.
func allocate(_ capacity: Int, _ pool: ArenaPool?) throws(GPT2Error) -> Arena {
    do { return try Arena.make(capacity: capacity, pool: pool) } catch { throw .outOfMemory(error) }
}
