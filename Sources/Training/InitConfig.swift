import Foundation
import GPT2
import Support

/// The `config.json` a model is trained from scratch with (`lnlens train --init`): a GPT-2
/// config as transformers writes it. Unlike a checkpoint's config, where lnlens ignores keys it
/// does not read, every key must be one GPT2Config knows — a misspelt size (`n_embed`) would
/// otherwise silently train the default.
public enum InitConfig {
    /// Keys of transformers' `GPT2Config` (and `PretrainedConfig` entries it writes).
    public static let knownKeys: Set<String> = [
        "model_type", "architectures", "n_embd", "n_layer", "n_head", "n_positions", "n_ctx", "vocab_size", "n_inner",
        "layer_norm_epsilon", "activation_function", "tie_word_embeddings", "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "bos_token_id", "eos_token_id",
        "initializer_range", "attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_type", "summary_use_proj",
        "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "use_cache", "torch_dtype", "dtype",
        "transformers_version", "_name_or_path", "task_specific_params", "pad_token_id",
    ]

    /// Reads and checks `url`: returns the config and its `initializer_range` (0.02 when absent).
    public static func load(_ url: URL) throws -> (config: GPT2Config, initializerRange: Double) {
        let data = try Files.read(url)
        let config = try GPT2Config.parse(data, file: url.path)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        for key in object.keys.sorted() where !knownKeys.contains(key) {
            let guess = knownKeys.min { editDistance($0, key) < editDistance($1, key) }
            let hint = guess.map { editDistance($0, key) <= 3 ? " (did you mean \"\($0)\"?)" : "" } ?? ""
            throw TrainingError.badOption(option: url.path, reason: "unknown config key \"\(key)\"\(hint); a GPT-2 config.json has the keys of transformers' GPT2Config")
        }
        guard config.activationFunction == "gelu_new" else {
            throw TrainingError.badOption(option: url.path, reason: "activation_function \"\(config.activationFunction)\": lnlens trains gelu_new GPT-2s")
        }
        guard config.lnMode == .layerNorm else {
            throw TrainingError.badOption(option: url.path, reason: "layer_norm_epsilon \(config.layerNormEpsilon) marks an LN-free model; train with LayerNorm (e.g. 1e-5), then remove it with lnlens remove-ln")
        }
        var range = 0.02
        if let r = object["initializer_range"] {
            guard let v = (r as? NSNumber)?.doubleValue, !(r is Bool), v > 0, v.isFinite else {
                throw TrainingError.badOption(option: url.path, reason: "initializer_range must be a positive number")
            }
            range = v
        }
        return (config, range)
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}
