import Foundation
import GPT2
import Support

/// Initial weights for a model trained from scratch, as transformers' `GPT2PreTrainedModel`
/// initialises them: embeddings and matrices ~ N(0, std²) (`initializer_range`, 0.02), the
/// residual-writing projections (`attn.c_proj`, `mlp.c_proj`) ~ N(0, (std/√(2·n_layer))²), biases 0, LayerNorm weights 1.
/// Each tensor draws from its own stream of `seed`, so its values do not depend on the others.
public enum Initialization {
    public static let std = 0.02

    public static func gpt2(config: GPT2Config, seed: UInt64, std: Double = Initialization.std) throws -> GPT2Model {
        let table = ParameterTable(config: config, storedLMHead: false, separateUnembedding: false)
        let parameters = try ModelParameters(table: table)
        for (i, entry) in table.checkpointEntries.enumerated() {
            let p = parameters.arena.base + entry.offset
            let name = entry.name
            if name.hasSuffix(".bias") { continue }  // zero already
            if name.hasSuffix("ln_1.weight") || name.hasSuffix("ln_2.weight") || name == "ln_f.weight" {
                for j in 0..<entry.count { p[j] = 1 }
                continue
            }
            let sd = name.hasSuffix("c_proj.weight") ? std / (2 * Double(config.nLayers)).squareRoot() : std
            var rng = SplitMix64(seed: seed, stream: UInt64(i + 1))
            for j in 0..<entry.count { p[j] = Float(sd * rng.normal()) }
        }
        return GPT2Model(config: config, parameters: parameters, processing: .none, alreadyProcessed: true)
    }
}
