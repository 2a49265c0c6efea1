import GPT2
import TensorCore

/// The attention-sink rate of Gu et al. 2025 as the companion code computes it
/// (`utils.calculate_sink_rate` of submarat/removing-layer-norm): a head is a sink at query
/// position q when its attention to position 0, `pattern[h, q, 0]`, exceeds `eps`; a head's rate
/// on a sequence is the fraction of its T query positions (position 0 included) where it is.
/// docs/analyses.md has the formulas and how the companion's own numbers map onto these.
public enum SinkRate {
    /// The companion's threshold.
    public static let defaultEps = 0.3

    /// The hooks a pass caches: every layer's attention pattern.
    public static func hooks(nLayers: Int) -> Set<HookName> {
        Set((0..<nLayers).map { HookName(.pattern, layer: $0) })
    }

    /// Per sequence of `tokens` (B of equal length T), the rate of every head, `[b][l · NH + h]`.
    /// The comparison is made in Float, as torch compares a float32 pattern with a Python float.
    public static func rates(model: GPT2Model, tokens: [[Int]], eps: Double) throws -> [[Double]] {
        let cfg = model.config
        let pass = try model.run(tokens, ForwardOptions(cache: hooks(nLayers: cfg.nLayers), logits: .none))
        let B = tokens.count, T = tokens[0].count, NH = cfg.nHeads
        let threshold = Float(eps)
        var out = [[Double]](repeating: [Double](repeating: 0, count: cfg.nLayers * NH), count: B)
        for l in 0..<cfg.nLayers {
            let pattern = pass.cache[HookName(.pattern, layer: l)]!.data  // [B, NH, T, T]
            for b in 0..<B {
                for h in 0..<NH {
                    let base = (b * NH + h) * T * T
                    var sinks = 0
                    for q in 0..<T where pattern[base + q * T] > threshold { sinks += 1 }
                    out[b][l * NH + h] = Double(sinks) / Double(T)
                }
            }
        }
        return out
    }

    /// Bytes of the cached patterns of one sequence of T tokens.
    public static func cacheBytes(T: Int, config cfg: GPT2Config) -> Int {
        cfg.nLayers * cfg.nHeads * T * T * MemoryLayout<Float>.stride
    }
}
