import TensorCore

extension GPT2Model {
    /// The forward pass from block `layer`'s `hook_resid_mid` on, given its value `residMid`
    /// (`B·T·C` floats, as a whole pass cached it): that block's MLP half, the later blocks, the
    /// final LayerNorm and the unembedding, each with the hooks, interventions and cache of
    /// `options` as in `run`. What an intervention at or after ln_2 of `layer` changes, and nothing
    /// else (causality: the blocks before it and the attention of `layer` see none of it) — so the
    /// ablation of a last-layer MLP neuron costs this tail, not a whole pass. A hook before the
    /// start is `GPT2Error.hookBeforeStart`.
    public func runFromResidMid(_ tokens: [[Int]], layer: Int, residMid: [Float], _ options: ForwardOptions) throws(GPT2Error) -> ForwardPass {
        try checkTokens(tokens)
        let L = config.nLayers, C = config.dModel
        guard layer >= 0 && layer < L else { throw .layerOutOfRange("blocks.\(layer).hook_resid_mid", nLayers: L) }
        let start = HookName(.residMid, layer: layer)
        for name in options.interventions.map(\.hook) + Array(options.cache) where !Self.runs(name, after: layer) {
            if let l = name.layer, l >= L { throw .layerOutOfRange(name.description, nLayers: L) }
            throw .hookBeforeStart(hook: name.description, start: start.description)
        }
        let B = tokens.count, T = tokens[0].count
        guard residMid.count == B * T * C else { throw .interventionShape(hook: start.description, expected: [B, T, C], got: [residMid.count]) }
        let plan = options.layerNorms ?? layerNormPlan
        let pass = try ForwardPass(tokens: tokens, config: config, options: options, plan: plan)
        var runner = HookRunner(cache: options.cache, cachePositions: options.cachePositions, interventions: options.interventions,
                                profile: options.profile)
        let rows = pass.rows, a = pass.block(layer)
        residMid.withUnsafeBufferPointer { a.residMid.update(from: $0.baseAddress!, count: $0.count) }
        try runner.forward(start, a.residMid, rows.layouts.resid)
        try mlp(layer, a, rows, plan.blocks[layer].ln2, rawEps: plan.rawEps, &runner)
        for l in (layer + 1)..<L {
            try block(l, pass.block(l), rows, plan.blocks[l], rawEps: plan.rawEps, &runner)
        }
        try finish(pass, plan: plan, &runner)
        return pass
    }

    /// Whether a pass started at block `layer`'s resid_mid reaches hook `name`.
    static func runs(_ name: HookName, after layer: Int) -> Bool {
        guard let l = name.layer else { return ![.embed, .posEmbed].contains(name.point) }
        if l != layer { return l > layer }
        return [.residMid, .ln2Scale, .ln2Normalized, .mlpPre, .mlpPost, .mlpOut, .residPost].contains(name.point)
    }
}
