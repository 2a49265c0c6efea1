import GPT2
import TensorCore

/// Residual-stream norms as the companion's `mech_interp/residual_stream/residual_norms.py`
/// measures them: the L2 norm at every position of `hook_embed`, `hook_pos_embed`, each block's
/// `hook_resid_mid` and `hook_resid_post`, and `ln_final.hook_normalized`; for each consecutive
/// pair of those hooks, the norm ratio ‖out‖/‖in‖ and the cosine similarity. Position 0 is kept
/// apart from the rest (the position-0 outlier). For an LN-free model the companion's final
/// LayerNorm is an identity whose hook never fires, and it copies the last `hook_resid_post` in
/// its place: so does this (docs/analyses.md).
public enum ResidualNorms {
    /// The hooks in the companion's order.
    public static func hooks(nLayers: Int) -> [HookName] {
        [HookName(.embed), HookName(.posEmbed)]
            + (0..<nLayers).flatMap { [HookName(.residMid, layer: $0), HookName(.residPost, layer: $0)] }
            + [HookName(.lnFinalNormalized)]
    }

    /// One quantity over one sequence: its value at position 0, and the mean and mean square of
    /// its values at positions 1 … T − 1 (`restCount` of them), from which the companion's pooled
    /// means and standard deviations follow exactly (`PooledMoments`).
    public struct Profile: Sendable, Equatable {
        public var first: Double
        public var restMean: Double
        public var restSquareMean: Double
        public var restCount: Int

        /// The profile of per-position values `v` (position 0 first).
        public init(_ v: [Double]) {
            first = v[0]
            let rest = v.dropFirst()
            restCount = rest.count
            restMean = rest.isEmpty ? .nan : rest.reduce(0, +) / Double(rest.count)
            restSquareMean = rest.isEmpty ? .nan : rest.reduce(0) { $0 + $1 * $1 } / Double(rest.count)
        }
    }

    /// One sequence's profiles: `norms[i]` of hook i (`hooks` order); `ratios[i]` and `cosines[i]`
    /// of the pair (hook i, hook i + 1), named by its output hook as the companion labels it.
    public struct SequenceNorms: Sendable {
        public var norms: [Profile]
        public var ratios: [Profile]
        public var cosines: [Profile]
    }

    /// The hooks a pass caches for `model` (an LN-free model's final LayerNorm is read from the
    /// last `hook_resid_post`).
    static func cached(_ model: GPT2Model) -> Set<HookName> {
        let hooks = hooks(nLayers: model.config.nLayers)
        return Set(model.lnMode == .lnFree ? Array(hooks.dropLast()) : hooks)
    }

    /// The profiles of each of `tokens` (B sequences of equal length).
    public static func measure(model: GPT2Model, tokens: [[Int]]) throws -> [SequenceNorms] {
        let pass = try model.run(tokens, ForwardOptions(cache: cached(model), logits: .none))
        let names = hooks(nLayers: model.config.nLayers)
        let C = model.config.dModel, T = tokens[0].count
        let last = HookName(.residPost, layer: model.config.nLayers - 1)
        let tensors = names.map { pass.cache[$0] ?? pass.cache[last]! }
        return (0..<tokens.count).map { b in
            let rows = tensors.map { t in (0..<T).map { p in Array(t.data[(b * T + p) * C ..< (b * T + p + 1) * C]) } }
            let norms = rows.map { $0.map(norm) }
            var ratios: [Profile] = [], cosines: [Profile] = []
            for i in 1..<names.count {
                ratios.append(Profile((0..<T).map { norms[i][$0] / norms[i - 1][$0] }))
                cosines.append(Profile((0..<T).map { cosine(rows[i - 1][$0], rows[i][$0]) }))
            }
            return SequenceNorms(norms: norms.map(Profile.init), ratios: ratios, cosines: cosines)
        }
    }

    /// ‖x‖₂, summed in Double.
    static func norm(_ x: [Float]) -> Double { x.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }

    /// x·y / max(‖x‖‖y‖, 1e-8), torch's `cosine_similarity`.
    static func cosine(_ x: [Float], _ y: [Float]) -> Double {
        var dot = 0.0, xx = 0.0, yy = 0.0
        for i in x.indices {
            dot += Double(x[i]) * Double(y[i])
            xx += Double(x[i]) * Double(x[i])
            yy += Double(y[i]) * Double(y[i])
        }
        return dot / max((xx * yy).squareRoot(), 1e-8)
    }

    /// Bytes of the cached hooks of one sequence of T tokens.
    public static func cacheBytes(T: Int, config cfg: GPT2Config) -> Int {
        (2 * cfg.nLayers + 3) * T * cfg.dModel * MemoryLayout<Float>.stride
    }
}

/// Mean and sample standard deviation of a pool of values given per part as (count, mean, mean
/// square): what the companion's `torch.cat(…).mean()` and `.std()` give over the same values.
public enum PooledMoments {
    public static func combine(_ parts: [(count: Int, mean: Double, squareMean: Double)]) -> (mean: Double, sd: Double, count: Int) {
        let used = parts.filter { $0.count > 0 && $0.mean.isFinite && $0.squareMean.isFinite }
        let n = used.reduce(0) { $0 + $1.count }
        guard n > 0 else { return (.nan, .nan, 0) }
        let mean = used.reduce(0) { $0 + Double($1.count) * $1.mean } / Double(n)
        guard n > 1 else { return (mean, .nan, n) }
        // Σ (v − mean)² = Σ v² − n·mean²; each part's deviations about the pooled mean, summed, to
        // keep the cancellation small.
        let ss = used.reduce(0) { acc, p in
            acc + Double(p.count) * (p.squareMean - p.mean * p.mean) + Double(p.count) * (p.mean - mean) * (p.mean - mean)
        }
        return (mean, (max(0, ss) / Double(n - 1)).squareRoot(), n)
    }
}
