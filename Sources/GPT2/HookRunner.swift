import TensorCore

/// Owns what a pass does at its hook points: the interventions (applied in the order given, in
/// the forward) and their derivatives (in the backward), the forward cache and the gradient cache.
/// The gradient cached at a hook is d metric / d (its output after the interventions), what a
/// TransformerLens backward hook receives; the gradient passed upstream is that times the
/// derivative of the interventions: a replaced or zeroed entry passes none, a scaled one passes
/// it scaled, an added one passes it unchanged.
struct HookRunner {
    let cacheNames: Set<HookName>
    /// Positions kept in the forward cache (nil: all).
    let cachePositions: [Int]?
    let gradNames: Set<HookName>
    let byHook: [HookName: [Intervention]]
    var cached: [HookName: Tensor] = [:]
    var grads: [HookName: Tensor] = [:]
    /// Activations as they were before their interventions, where the backward needs them (the
    /// softmax's own output at a changed `hook_pattern`).
    var beforeInterventions: [HookName: [Float]] = [:]
    /// Times the pass phase by phase: at each hook, the time since the previous one goes to the
    /// phase of the op(s) between them; the hook's own work (cache copies, interventions) goes
    /// to the next phase in the forward and to "hook gradients" in the backward.
    var profile: PhaseTimes?

    init(cache: Set<HookName> = [], cachePositions: [Int]? = nil, grads: Set<HookName> = [],
         interventions: [Intervention] = [], profile: PhaseTimes? = nil) {
        cacheNames = cache
        self.cachePositions = cachePositions
        gradNames = grads
        var byHook: [HookName: [Intervention]] = [:]
        for iv in interventions { byHook[iv.hook, default: []].append(iv) }
        self.byHook = byHook
        self.profile = profile
        profile?.start()
    }

    /// Whether the forward must stop at `name` (an intervention or a cache request).
    func isActive(_ name: HookName) -> Bool { cacheNames.contains(name) || byHook[name] != nil }
    func hasIntervention(_ name: HookName) -> Bool { byHook[name] != nil }

    /// Forward: applies `name`'s interventions to the activation at `buffer` (keeping a copy of it
    /// first with `keepOriginal`, when there are any), then caches it.
    mutating func forward(_ name: HookName, _ buffer: FloatPointer, _ layout: HookLayout,
                          keepOriginal: Bool = false) throws(GPT2Error) {
        profile?.lap(name.point.forwardPhase)
        if let ivs = byHook[name] {
            if keepOriginal { beforeInterventions[name] = Array(UnsafeBufferPointer(start: buffer, count: layout.count)) }
            for iv in ivs { try iv.apply(to: buffer, layout: layout) }
        }
        if cacheNames.contains(name) { cached[name] = layout.extract(from: buffer, positions: cachePositions) }
    }

    /// Backward: caches the gradient at `name`'s output, then turns it into the gradient of the
    /// activation before the interventions, in place.
    mutating func backward(_ name: HookName, _ grad: FloatPointer, _ layout: HookLayout) throws(GPT2Error) {
        profile?.lap(name.point.backwardPhase)
        if gradNames.contains(name) { grads[name] = layout.extract(from: grad, positions: nil) }
        if let ivs = byHook[name] { for iv in ivs.reversed() { try iv.applyDerivative(to: grad, layout: layout) } }
        profile?.lap("hook gradients")
    }

    /// Backward: caches `gradient` as the gradient at `name` (computed by the caller only when asked
    /// for: `hook_result`'s, which is d attn_out per head).
    mutating func cacheGradient(_ name: HookName, _ gradient: () -> Tensor) {
        guard gradNames.contains(name) else { return }
        profile?.lap(name.point.backwardPhase)
        grads[name] = gradient()
        profile?.lap("hook gradients")
    }

    /// Closes a phase that no hook ends (the unembedding, the embeddings' backward, patching's
    /// own work).
    func endPhase(_ phase: String) { profile?.lap(phase) }
}

extension HookName.Point {
    /// The phase of the forward that ends at this hook: the op computing its activation.
    var forwardPhase: String {
        switch self {
        case .embed, .posEmbed: "embed"
        case .residPre, .residMid, .residPost: "residual adds"
        case .ln1Scale, .ln1Normalized, .ln2Scale, .ln2Normalized, .lnFinalScale, .lnFinalNormalized: "layernorm"
        case .q, .k, .v: "qkv matmul"
        case .attnScores: "attention scores"
        case .pattern: "softmax"
        case .z: "attention values"
        case .result, .attnOut: "attn out matmul"
        case .mlpPre: "mlp in matmul"
        case .mlpPost: "gelu_new"
        case .mlpOut: "mlp out matmul"
        }
    }

    /// The phase of the backward that ends at this hook's gradient: the backward of the op that
    /// reads its activation.
    var backwardPhase: String {
        switch self {
        case .embed, .posEmbed, .mlpOut, .attnOut, .result: "residual adds"
        case .lnFinalNormalized: "unembed"
        case .residPre, .residMid, .residPost, .ln1Scale, .ln2Scale, .lnFinalScale: "layernorm"
        case .ln1Normalized: "qkv matmul"
        case .q, .k, .v: "attention scores"
        case .attnScores: "softmax"
        case .pattern: "attention values"
        case .z: "attn out matmul"
        case .mlpPre: "gelu_new"
        case .mlpPost: "mlp out matmul"
        case .ln2Normalized: "mlp in matmul"
        }
    }
}

/// Layouts of every hook over a pass's buffers for one batch shape (TransformerLens shapes).
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

    func layout(of point: HookName.Point) -> HookLayout {
        switch point {
        case .embed, .posEmbed, .residPre, .residMid, .residPost, .attnOut, .mlpOut,
             .ln1Normalized, .ln2Normalized, .lnFinalNormalized: resid
        case .ln1Scale, .ln2Scale, .lnFinalScale: scale
        case .q: qkv(part: 0)
        case .k: qkv(part: 1)
        case .v: qkv(part: 2)
        case .attnScores, .pattern: attn
        case .z: z
        case .result: result
        case .mlpPre, .mlpPost: mlp
        }
    }
}
