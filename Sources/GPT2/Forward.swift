import Foundation
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
    /// Training's dropout (the masks of one micro-batch); nil: none, as every analysis runs.
    public var dropout: Dropout? = nil

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

/// A LayerNorm's activations: per-row mean, scale as used (`hook_scale`), raw scale
/// `sqrt(var + eps)` (what the backward differentiates), and output (`hook_normalized`).
public struct LayerNormActivations {
    public let mean: FloatPointer        // (N)
    public let scale: FloatPointer       // (N)
    public let rawScale: FloatPointer    // (N)
    public let out: FloatPointer         // (N, C)

    /// Floats of the views for N rows, in the order `init` takes them.
    static func sizes(N: Int, C: Int) -> [Int] { [N, N, N, N * C] }

    init(_ arena: Arena, N: Int, C: Int) {
        mean = arena.take(N)
        scale = arena.take(N)
        rawScale = arena.take(N)
        out = arena.take(N * C)
    }
}

/// One block's activations for N rows: views into a pass's arena.
public struct BlockActivations {
    public var residPre: FloatPointer    // (N, C)
    public let ln1: LayerNormActivations
    /// The values' own LayerNorm while `ln_1` is removed on one path only; nil otherwise.
    public let ln1V: LayerNormActivations?
    public let qkv: FloatPointer         // (N, 3C) q | k | v
    public let att: FloatPointer         // (B, NH, T, T) the pattern (scores before the softmax); a row pass: per segment (NH, rows, keys)
    public let z: FloatPointer           // (N, C) = (N, NH, dh)
    public let attnOut: FloatPointer     // (N, C)
    public var residMid: FloatPointer    // (N, C)
    public let ln2: LayerNormActivations
    public let mlpPre: FloatPointer      // (N, M)
    public let mlpPost: FloatPointer     // (N, M)
    public let mlpOut: FloatPointer      // (N, C)
    public var residPost: FloatPointer   // (N, C)

    /// Floats of one block's views for N rows and `scores` attention scores, in the order
    /// `init` takes them.
    static func sizes(N: Int, scores: Int, splitLN1: Bool, config cfg: GPT2Config) -> [Int] {
        let C = cfg.dModel, M = cfg.dMLP, ln = LayerNormActivations.sizes(N: N, C: C)
        return ln + (splitLN1 ? ln : []) + [3 * N * C, scores, N * C, N * C, N * C] + ln + [N * M, N * M, N * C, N * C]
    }

    /// One block's views taken from `arena`, reading resid_pre from `residPre` (resid_post in
    /// its own buffer).
    init(_ a: Arena, N: Int, scores: Int, splitLN1: Bool, config cfg: GPT2Config, residPre: FloatPointer) {
        let C = cfg.dModel, M = cfg.dMLP
        self.residPre = residPre
        ln1 = LayerNormActivations(a, N: N, C: C)
        ln1V = splitLN1 ? LayerNormActivations(a, N: N, C: C) : nil
        qkv = a.take(3 * N * C)
        att = a.take(scores)
        z = a.take(N * C)
        attnOut = a.take(N * C)
        residMid = a.take(N * C)
        ln2 = LayerNormActivations(a, N: N, C: C)
        mlpPre = a.take(N * M)
        mlpPost = a.take(N * M)
        mlpOut = a.take(N * C)
        residPost = a.take(N * C)
    }

    /// These buffers as block `l` of a pass that reuses one block's buffers: the residual
    /// stream alternates between `residPre` and `residPost`.
    func alternating(layer l: Int) -> BlockActivations {
        var b = self
        if l % 2 == 1 { swap(&b.residPre, &b.residPost) }
        return b
    }
}

/// The rows a pass runs through its blocks: N rows, the sequences attention sees among them,
/// and the hooks' layouts over them.
struct Rows {
    let N: Int
    let segments: [AttentionSegment]
    let layouts: Layouts
    /// A linearised variant's frozen values (patched rows of `--freeze`); nil: the model itself.
    var frozen: FrozenValues? = nil
    /// Training's dropout masks (nil: none).
    var dropout: Dropout? = nil
    /// The pattern after attention dropout (the scores' size), which the values read, the
    /// forward's and the backward's (which regenerates it); nil without attention dropout.
    var droppedPattern: FloatPointer? = nil

    /// The frozen values of `part`, when the rows freeze it.
    func frozen(_ part: Freeze) -> FrozenValues? { frozen.flatMap { $0.parts.contains(part) ? $0 : nil } }

    /// The base pass's scale of the LayerNorm `pick` selects, when the rows freeze the LayerNorms.
    func frozenScale(_ pick: (ForwardPass) -> LayerNormActivations) -> FloatPointer? { frozen(.ln).map { pick($0.base).scale } }
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
    /// The hook runner as the forward left it (the backward starts from it).
    var runner: HookRunner
    let plan: LayerNormPlan
    let retained: Bool
    /// B sequences of T rows, as every block runs them.
    let rows: Rows
    /// The pass whose buffers a view of its first prompts reads (kept alive by it); nil otherwise.
    private let owner: ForwardPass?

    /// The views one pass's arena holds, in the order `init` takes them: B sequences of T tokens,
    /// `logitRows` rows of logits, every block's activations kept (`retained`, for a backward)
    /// or one block's reused, ln_1 planned once or twice (`splitLN1`), one pattern after
    /// attention dropout (`droppedPattern`).
    static func arenaSizes(B: Int, T: Int, config cfg: GPT2Config, logitRows: Int, retained: Bool, splitLN1: Bool,
                           droppedPattern: Bool = false) -> [Int] {
        let N = B * T, C = cfg.dModel
        var sizes = [N * C, N * C, N * C, N * C] + LayerNormActivations.sizes(N: N, C: C) + [logitRows * cfg.dVocab]
            + (droppedPattern ? [B * cfg.nHeads * T * T] : [])
        for _ in 0..<(retained ? cfg.nLayers : 1) {
            sizes += BlockActivations.sizes(N: N, scores: B * cfg.nHeads * T * T, splitLN1: splitLN1, config: cfg)
        }
        return sizes
    }

    /// Bytes of the arenas of one forward pass over B × T tokens with logits at `logits` (and,
    /// with `backward`, every activation kept, the backward's scratch and d logits): what a job
    /// checks against the machine's memory before it starts (`MemoryBudget`), and sizes its
    /// batches by. `attentionDropout`: training's pattern after dropout too.
    public static func footprint(B: Int, T: Int, config cfg: GPT2Config, logits: LogitPositions = .all,
                                 backward: Bool, attentionDropout: Bool = false) -> Int {
        let logitRows = switch logits {
        case .all: B * T
        case .last: B
        case .none: 0
        }
        var floats = Arena.footprint(arenaSizes(B: B, T: T, config: cfg, logitRows: logitRows, retained: backward, splitLN1: true,
                                                droppedPattern: attentionDropout))
        if backward { floats += logitRows * cfg.dVocab + Arena.footprint(BackwardScratch.sizes(B: B, T: T, config: cfg)) }
        return floats * MemoryLayout<Float>.stride
    }

    init(tokens: [[Int]], config cfg: GPT2Config, options: ForwardOptions, plan: LayerNormPlan) throws(GPT2Error) {
        let B = tokens.count, T = tokens[0].count
        self.tokens = tokens
        self.B = B
        self.T = T
        let N = B * T, C = cfg.dModel
        logitRows = switch options.logits {
        case .all: Array(0..<N)
        case .last: (0..<B).map { $0 * T + T - 1 }
        case .none: []
        }
        retained = options.retainForBackward
        let split = plan.blocks.contains { $0.ln1 != $0.ln1V }, dropsPattern = (options.dropout?.rates.attn ?? 0) > 0
        let sizes = Self.arenaSizes(B: B, T: T, config: cfg, logitRows: logitRows.count, retained: retained, splitLN1: split,
                                    droppedPattern: dropsPattern)
        pool = options.arenas
        arena = try allocate(Arena.footprint(sizes), options.arenas)
        embed = arena.take(N * C)
        posEmbed = arena.take(N * C)
        let streamA = arena.take(N * C), streamB = arena.take(N * C)
        lnF = LayerNormActivations(arena, N: N, C: C)
        logits = arena.take(logitRows.count * cfg.dVocab)
        let droppedPattern = dropsPattern ? arena.take(B * cfg.nHeads * T * T) : nil
        var blocks: [BlockActivations] = []
        for l in 0..<(retained ? cfg.nLayers : 1) {
            // Retained: block l reads the previous block's resid_post; reused: two buffers alternate.
            var b = BlockActivations(arena, N: N, scores: B * cfg.nHeads * T * T, splitLN1: split, config: cfg,
                                     residPre: retained && l > 0 ? blocks[l - 1].residPost : streamA)
            if !retained { b.residPost = streamB }
            blocks.append(b)
        }
        self.blocks = blocks
        residFinal = streamA
        cache = [:]
        runner = HookRunner()
        self.plan = plan
        owner = nil
        rows = Rows(N: N, segments: AttentionSegment.batch(B: B, T: T, NH: cfg.nHeads),
                    layouts: Layouts(B: B, T: T, C: C, NH: cfg.nHeads, dh: cfg.dHead, M: cfg.dMLP), dropout: options.dropout,
                    droppedPattern: droppedPattern)
    }

    /// The first `n` prompts of `pass` as a pass of their own, on its buffers (every buffer holds
    /// prompt b's rows, scores and logit rows before prompt b + 1's): their backward alone, where
    /// the later prompts were run only for their activations. Without dropout (its masks cover
    /// every prompt).
    init(prompts n: Int, of pass: ForwardPass) {
        precondition(n >= 1 && n <= pass.B && pass.rows.dropout == nil, "a view of 1...B prompts of a pass without dropout")
        let L = pass.rows.layouts, N = n * pass.T
        (tokens, B, T) = (Array(pass.tokens.prefix(n)), n, pass.T)
        (arena, pool, owner) = (pass.arena, nil, pass)
        (embed, posEmbed, blocks, lnF, residFinal) = (pass.embed, pass.posEmbed, pass.blocks, pass.lnF, pass.residFinal)
        (logits, logitRows) = (pass.logits, pass.logitRows.filter { $0 < N })
        (cache, runner, plan, retained) = ([:], pass.runner, pass.plan, pass.retained)
        rows = Rows(N: N, segments: AttentionSegment.batch(B: n, T: T, NH: L.NH),
                    layouts: Layouts(B: n, T: T, C: L.C, NH: L.NH, dh: L.dh, M: L.M))
    }

    deinit { pool?.recycle(arena) }

    /// Block `l`'s activations (the reused buffers, with the residual stream in place, when not retained).
    func block(_ l: Int) -> BlockActivations { retained ? blocks[l] : blocks[0].alternating(layer: l) }

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

extension GPT2Model {
    /// The forward pass as the architecture reads: embeddings, the blocks, the final LayerNorm,
    /// the unembedding. `gradHooks` are the hooks a following backward will cache gradients at.
    public func run(_ tokens: [[Int]], _ options: ForwardOptions, gradHooks: Set<HookName> = []) throws(GPT2Error) -> ForwardPass {
        try checkTokens(tokens)
        for iv in options.interventions {
            if let l = iv.hook.layer, l >= config.nLayers { throw .layerOutOfRange(iv.hook.description, nLayers: config.nLayers) }
        }
        let plan = options.layerNorms ?? layerNormPlan
        let pass = try ForwardPass(tokens: tokens, config: config, options: options, plan: plan)
        var runner = HookRunner(cache: options.cache, cachePositions: options.cachePositions, grads: gradHooks,
                                interventions: options.interventions, profile: options.profile)
        let rows = pass.rows

        embed(pass)
        try runner.forward(.embed(), pass.embed, rows.layouts.resid)
        try runner.forward(.posEmbed(), pass.posEmbed, rows.layouts.resid)
        residualForward(out: pass.block(0).residPre, a: pass.embed, b: pass.posEmbed, n: pass.N * config.dModel)
        if let mask = rows.dropout?.mask(.embedding) {
            mask.apply(out: pass.block(0).residPre, inp: pass.block(0).residPre, n: pass.N * config.dModel)
        }
        for l in 0..<config.nLayers {
            try block(l, pass.block(l), rows, plan.blocks[l], rawEps: plan.rawEps, &runner)
        }
        try finish(pass, plan: plan, &runner)
        return pass
    }

    /// The end of every forward: the final LayerNorm on the last block's resid_post, the
    /// unembedding of the pass's logit rows, the cache and the runner kept with the pass.
    func finish(_ pass: ForwardPass, plan: LayerNormPlan, _ runner: inout HookRunner) throws(GPT2Error) {
        pass.residFinal = pass.block(config.nLayers - 1).residPost
        try layerNorm(pass.lnF, input: pass.residFinal, weights: parameters.lnF, scale: plan.final, rawEps: plan.rawEps,
                      hooks: (HookName(.lnFinalScale), HookName(.lnFinalNormalized)), pass.rows, &runner)
        if !pass.logitRows.isEmpty {
            unembedRowsForward(logits: pass.logits, x: pass.lnF.out, rows: pass.logitRows, wU: parameters.wU, bU: parameters.bU,
                               C: config.dModel, V: config.dVocab)
        }
        runner.endPhase("unembed")
        pass.cache = runner.cached
        pass.runner = runner
    }

    // MARK: The parts of the forward

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

    /// One block over `rows`: attention then the MLP, each added to the residual stream.
    func block(_ l: Int, _ a: BlockActivations, _ rows: Rows, _ lns: LayerNormPlan.Block, rawEps: Float,
               _ runner: inout HookRunner) throws(GPT2Error) {
        try runner.forward(.block(l, .residPre), a.residPre, rows.layouts.resid)
        try attention(l, a, rows, lns, rawEps: rawEps, &runner)
        try mlp(l, a, rows, lns.ln2, rawEps: rawEps, &runner)
    }

    /// ln_1, q k v, causal attention over each of `rows`' sequences (with their cached prefix),
    /// the heads' outputs: resid_mid = resid_pre + attn_out.
    func attention(_ l: Int, _ a: BlockActivations, _ rows: Rows, _ lns: LayerNormPlan.Block, rawEps: Float,
                   _ runner: inout HookRunner) throws(GPT2Error) {
        let w = parameters.blocks[l], L = rows.layouts, N = rows.N, C = config.dModel, NH = config.nHeads
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        if let v = a.ln1V {
            try layerNorm(v, input: a.residPre, weights: w.ln1, scale: lns.ln1V, rawEps: rawEps, hooks: nil, rows, &runner,
                          frozen: rows.frozenScale { $0.block(l).ln1V! })
        }
        try layerNorm(a.ln1, input: a.residPre, weights: w.ln1, scale: lns.ln1, rawEps: rawEps,
                      hooks: (h(.ln1Scale), h(.ln1Normalized)), rows, &runner, frozen: rows.frozenScale { $0.block(l).ln1 })
        if let v = a.ln1V {
            // Q and K read ln_1, V its own LayerNorm.
            matmulForward(out: a.qkv, inp: a.ln1.out, w: w.wQKV, bias: w.bQKV, N: N, IC: C, OC: 2 * C, ldw: 3 * C, ldout: 3 * C)
            matmulForward(out: a.qkv + 2 * C, inp: v.out, w: w.wQKV + 2 * C, bias: w.bQKV + 2 * C, N: N, IC: C, OC: C,
                          ldw: 3 * C, ldout: 3 * C)
        } else {
            matmulForward(out: a.qkv, inp: a.ln1.out, w: w.wQKV, bias: w.bQKV, N: N, IC: C, OC: 3 * C)
        }
        try runner.forward(h(.q), a.qkv, L.qkv(part: 0))
        try runner.forward(h(.k), a.qkv, L.qkv(part: 1))
        try runner.forward(h(.v), a.qkv, L.qkv(part: 2))
        if let frozen = rows.frozen(.attention) {
            // Linearised: the base pass's pattern (the rows have no hooks, so no scores).
            frozen.pattern(layer: l, into: a.att, segments: rows.segments, NH: NH)
        } else {
            attentionScoresForward(att: a.att, qkv: a.qkv, segments: rows.segments, C: C, NH: NH, alpha: attentionScale(layer: l))
            try runner.forward(h(.attnScores), a.att, L.attn)
            attentionSoftmaxForward(att: a.att, segments: rows.segments, NH: NH)
        }
        try runner.forward(h(.pattern), a.att, L.attn, keepOriginal: true)
        var pattern = UnsafePointer(a.att)
        if let mask = rows.dropout?.mask(.attention, layer: l), let dropped = rows.droppedPattern {
            mask.apply(out: dropped, inp: a.att, n: AttentionSegment.scoresSize(rows.segments, NH: NH))
            pattern = UnsafePointer(dropped)
        }
        attentionValuesForward(z: a.z, pattern: pattern, qkv: a.qkv, segments: rows.segments, C: C, NH: NH)
        try runner.forward(h(.z), a.z, L.z)
        try headOutputs(l, a, rows, &runner)
        if let mask = rows.dropout?.mask(.attentionOutput, layer: l) { mask.apply(out: a.attnOut, inp: a.attnOut, n: N * C) }
        try runner.forward(h(.attnOut), a.attnOut, L.resid)
        residualForward(out: a.residMid, a: a.residPre, b: a.attnOut, n: N * C)
        try runner.forward(h(.residMid), a.residMid, L.resid)
    }

    /// attn_out = z · W_O + b_O. The per-head outputs (`hook_result`) are computed only for a hook
    /// that reads or changes them; changed, attn_out is their sum, else it keeps its one product.
    func headOutputs(_ l: Int, _ a: BlockActivations, _ rows: Rows, _ runner: inout HookRunner) throws(GPT2Error) {
        let w = parameters.blocks[l], N = rows.N, C = config.dModel, NH = config.nHeads
        let name = HookName(.result, layer: l), changed = runner.hasIntervention(name)
        if runner.isActive(name) {
            var result = [Float](repeating: 0, count: N * NH * C)
            try result.withUnsafeMutableBufferPointer { (r) throws(GPT2Error) in
                headOutputForward(result: r.baseAddress!, z: a.z, wO: w.wO, N: N, C: C, NH: NH)
                try runner.forward(name, r.baseAddress!, rows.layouts.result)
                if changed { headSumForward(out: a.attnOut, result: r.baseAddress!, bO: w.bO, N: N, C: C, NH: NH) }
            }
        }
        if !changed { matmulForward(out: a.attnOut, inp: a.z, w: w.wO, bias: w.bO, N: N, IC: C, OC: C) }
    }

    /// ln_2 and the MLP: resid_post = resid_mid + mlp_out. Row by row, so any rows will do
    /// (patching runs it on just the rows a patch changed).
    func mlp(_ l: Int, _ a: BlockActivations, _ rows: Rows, _ ln2: LayerNormScale, rawEps: Float,
             _ runner: inout HookRunner) throws(GPT2Error) {
        let w = parameters.blocks[l], L = rows.layouts, N = rows.N, C = config.dModel, M = config.dMLP
        func h(_ point: HookName.Point) -> HookName { HookName(point, layer: l) }
        try layerNorm(a.ln2, input: a.residMid, weights: w.ln2, scale: ln2, rawEps: rawEps,
                      hooks: (h(.ln2Scale), h(.ln2Normalized)), rows, &runner, frozen: rows.frozenScale { $0.block(l).ln2 })
        matmulForward(out: a.mlpPre, inp: a.ln2.out, w: w.wIn, bias: w.bIn, N: N, IC: C, OC: M)
        try runner.forward(h(.mlpPre), a.mlpPre, L.mlp)
        if let frozen = rows.frozen(.mlp) {
            // Linearised: GELU's tangent at the base pass's pre-activations.
            let x0 = frozen.mlpPre(layer: l, M: M)
            geluTangentForward(out: a.mlpPost, inp: a.mlpPre, at: x0, n: N * M)
        } else {
            geluForward(out: a.mlpPost, inp: a.mlpPre, n: N * M)
        }
        try runner.forward(h(.mlpPost), a.mlpPost, L.mlp)
        matmulForward(out: a.mlpOut, inp: a.mlpPost, w: w.wOut, bias: w.bOut, N: N, IC: M, OC: C)
        if let mask = rows.dropout?.mask(.mlpOutput, layer: l) { mask.apply(out: a.mlpOut, inp: a.mlpOut, n: N * C) }
        try runner.forward(h(.mlpOut), a.mlpOut, L.resid)
        residualForward(out: a.residPost, a: a.residMid, b: a.mlpOut, n: N * C)
        try runner.forward(h(.residPost), a.residPost, L.resid)
    }

    /// LayerNorm in two steps, as TransformerLens hooks it: `hook_scale` between the statistics
    /// and the normalisation, `hook_normalized` after it. `weights` nil: folded into the next layer.
    /// `frozen`: a base pass's scales (one per base row), which the rows take instead of their own.
    func layerNorm(_ a: LayerNormActivations, input x: FloatPointer, weights: LayerNormWeights?, scale: LayerNormScale,
                   rawEps: Float, hooks: (scale: HookName, normalized: HookName)?, _ rows: Rows,
                   _ runner: inout HookRunner, frozen: FloatPointer? = nil) throws(GPT2Error) {
        let C = config.dModel
        layerNormStats(mean: a.mean, scale: a.scale, rawScale: a.rawScale, x: x, N: rows.N, C: C, mode: scale, rawEps: rawEps)
        if let frozen, let values = rows.frozen { values.scale(frozen, into: a.scale) }
        if let hooks { try runner.forward(hooks.scale, a.scale, rows.layouts.scale) }
        layerNormApply(out: a.out, x: x, mean: a.mean, scale: a.scale, w: weights?.w, b: weights?.b, N: rows.N, C: C)
        if let hooks { try runner.forward(hooks.normalized, a.out, rows.layouts.resid) }
    }
}

/// An arena for a pass (from `pool` when there is one); a machine without the memory is
/// `GPT2Error.outOfMemory`, never an abort.
func allocate(_ capacity: Int, _ pool: ArenaPool?) throws(GPT2Error) -> Arena {
    do { return try Arena.make(capacity: capacity, pool: pool) } catch { throw .outOfMemory(error) }
}
