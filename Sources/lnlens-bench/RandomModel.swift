import Analysis
import GPT2
import Support
import TensorCore

/// A GPT-2-small-shaped model with seeded random weights, made in memory: std 0.02 for
/// matrices, embeddings and biases, 1 ± 0.05 for LayerNorm weights. Only the shapes matter
/// for timing; the values keep activations in GPT-2's usual range.
enum RandomModel {
    static func config(layers: Int) -> GPT2Config {
        GPT2Config(dModel: 768, nLayers: layers, nHeads: 12, nCtx: 1024, dVocab: 50257)
    }

    /// Fills a parameter table with the checkpoint's canonical names and shapes, then processes
    /// it exactly as a loaded checkpoint is (`processing`).
    static func make(config: GPT2Config, seed: UInt64, processing: ProcessingOptions = .all) throws -> GPT2Model {
        let table = ParameterTable(config: config, storedLMHead: false, separateUnembedding: !processing.isNone)
        let parameters = try ModelParameters(table: table)
        for (i, entry) in table.checkpointEntries.enumerated() {
            // One stream per tensor, so a tensor's values do not depend on the order of requests.
            var rng = SplitMix64(seed: seed &+ 0x9E37_79B9 &* UInt64(i + 1))
            let name = entry.name
            let isLNWeight = name.hasSuffix("ln_1.weight") || name.hasSuffix("ln_2.weight") || name == "ln_f.weight"
            let p = parameters.arena.base + entry.offset
            for j in 0..<entry.count { p[j] = isLNWeight ? 1 + 0.05 * normal(&rng) : 0.02 * normal(&rng) }
        }
        if let u = table.entry("unembed.weight") {
            (parameters.arena.base + u.offset).update(from: parameters.wE, count: u.count)
        }
        return GPT2Model(config: config, parameters: parameters, processing: processing)
    }

    /// Approximately standard normal: Irwin–Hall sum of four 16-bit uniforms, rescaled to unit
    /// variance. One generator step per value; exact normality does not matter for timing.
    @inline(__always)
    static func normal(_ rng: inout SplitMix64) -> Float {
        let r = rng.next()
        let s = Float(r & 0xFFFF) + Float((r >> 16) & 0xFFFF) + Float((r >> 32) & 0xFFFF) + Float(r >> 48)
        // Mean of each uniform is 32767.5, variance 65536²/12; four of them: variance 65536²/3.
        return (s - 131_070) * (1.7320508 / 65536)
    }

    /// `count` token ids drawn uniformly from the vocabulary.
    static func tokens(count: Int, dVocab: Int, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed ^ 0x746F_6B65_6E73)
        return (0..<count).map { _ in rng.next(below: dVocab) }
    }
}
