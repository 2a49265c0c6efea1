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

    init(cache: Set<HookName>, cachePositions: [Int]?, grads: Set<HookName>, interventions: [Intervention]) {
        cacheNames = cache
        self.cachePositions = cachePositions
        gradNames = grads
        var byHook: [HookName: [Intervention]] = [:]
        for iv in interventions { byHook[iv.hook, default: []].append(iv) }
        self.byHook = byHook
    }

    /// Whether the forward must stop at `name` (an intervention or a cache request).
    func isActive(_ name: HookName) -> Bool { cacheNames.contains(name) || byHook[name] != nil }
    func hasIntervention(_ name: HookName) -> Bool { byHook[name] != nil }

    /// Forward: applies `name`'s interventions to the activation at `buffer`, then caches it.
    mutating func forward(_ name: HookName, _ buffer: FloatPointer, _ layout: HookLayout) throws(GPT2Error) {
        if let ivs = byHook[name] { for iv in ivs { try iv.apply(to: buffer, layout: layout) } }
        if cacheNames.contains(name) { cached[name] = layout.extract(from: buffer, positions: cachePositions) }
    }

    /// Backward: caches the gradient at `name`'s output, then turns it into the gradient of the
    /// activation before the interventions, in place.
    mutating func backward(_ name: HookName, _ grad: FloatPointer, _ layout: HookLayout) throws(GPT2Error) {
        if gradNames.contains(name) { grads[name] = layout.extract(from: grad, positions: nil) }
        if let ivs = byHook[name] { for iv in ivs.reversed() { try iv.applyDerivative(to: grad, layout: layout) } }
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
