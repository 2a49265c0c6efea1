import Foundation
import Support
import TensorCore

/// Saving a model as a Hugging Face folder that `GPT2LMHeadModel.from_pretrained` loads:
/// `config.json`, `model.safetensors` (GPT-2's own tensor names with the `transformer.` prefix, as
/// transformers writes them; the tied `lm_head` left out) and the tokenizer files.
public enum CheckpointExport {
    /// How the weights are stored: F32, or F16 for the matrices and embeddings (LayerNorm weights
    /// and biases stay F32: an LN-free model's LayerNorm weights, ~1e6, exceed F16's range).
    public enum Precision: String, Sendable, CaseIterable { case f32, f16 }

    /// The `config.json` transformers writes for `config`.
    public static func configJSON(_ config: GPT2Config) -> [String: Any] {
        [
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "n_embd": config.dModel, "n_layer": config.nLayers, "n_head": config.nHeads,
            "n_positions": config.nCtx, "n_ctx": config.nCtx, "vocab_size": config.dVocab,
            "n_inner": config.dMLP == 4 * config.dModel ? NSNull() : config.dMLP as Any,
            "layer_norm_epsilon": config.layerNormEpsilon, "activation_function": config.activationFunction,
            "tie_word_embeddings": config.tieWordEmbeddings, "scale_attn_weights": config.scaleAttnWeights,
            "scale_attn_by_inverse_layer_idx": config.scaleAttnByInverseLayerIdx, "reorder_and_upcast_attn": false,
            "bos_token_id": 50256, "eos_token_id": 50256, "initializer_range": 0.02,
            "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "summary_first_dropout": 0.1,
            "torch_dtype": "float32", "use_cache": true,
        ]
    }

    /// Writes `parameters` (in the checkpoint's parameterisation: an unprocessed model's) with
    /// `config` into the new folder `directory`, with the tokenizer files of `tokenizerFrom`.
    /// The folder is built under a temporary name beside it and renamed into place; an existing
    /// folder is replaced only with `force`.
    public static func save(_ parameters: ModelParameters, config: GPT2Config, to directory: URL,
                            tokenizerFrom: URL?, precision: Precision = .f32, metadata: [String: String] = [:],
                            force: Bool = false) throws {
        let fm = FileManager.default
        let path = directory.path
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard force else { throw GPT2Error.writeFailed(file: path, reason: "it already exists; pass --force to replace it") }
            guard isDirectory.boolValue else { throw GPT2Error.writeFailed(file: path, reason: "it is a file, not a folder") }
        }
        let parent = directory.deletingLastPathComponent()
        guard fm.fileExists(atPath: parent.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw GPT2Error.writeFailed(file: path, reason: "the folder \(parent.path) does not exist")
        }
        let staging = parent.appendingPathComponent(".\(directory.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try fm.createDirectory(at: staging, withIntermediateDirectories: false)
            try write(parameters, config: config, into: staging, tokenizerFrom: tokenizerFrom, precision: precision,
                      metadata: metadata)
            if fm.fileExists(atPath: path) { try fm.removeItem(at: directory) }
            guard rename(staging.path, path) == 0 else {
                throw GPT2Error.writeFailed(file: path, reason: String(cString: strerror(errno)))
            }
        } catch {
            try? fm.removeItem(at: staging)
            if let e = error as? GPT2Error { throw e }
            throw GPT2Error.writeFailed(file: path, reason: Files.describe(error))
        }
    }
}

extension CheckpointExport {
    /// Writes the files of a Hugging Face folder (config.json, model.safetensors, the tokenizer
    /// files of `tokenizerFrom`) into the existing folder `directory`, each atomically, replacing
    /// files of those names.
    public static func write(_ parameters: ModelParameters, config: GPT2Config, into directory: URL, tokenizerFrom: URL?,
                             precision: Precision = .f32, metadata: [String: String] = [:]) throws {
        try writeConfig(config, into: directory)
        var tensors: [String: Tensor] = [:]
        for (name, t) in parameters.checkpointTensors() where !(name == "lm_head.weight" && config.tieWordEmbeddings) {
            tensors["transformer." + name] = t
        }
        if let head = tensors.removeValue(forKey: "transformer.lm_head.weight") { tensors["lm_head.weight"] = head }
        try SafetensorsWriter.write(tensors, metadata: metadata.merging(["format": "pt"]) { a, _ in a },
                                    to: directory.appendingPathComponent("model.safetensors")) { name in
            precision == .f16 && tensors[name]!.rank == 2 ? .f16 : .f32
        }
        if let tokenizerFrom { try copyTokenizer(from: tokenizerFrom, into: directory) }
    }

    /// Writes `config.json` (`configJSON`) into `directory`.
    public static func writeConfig(_ config: GPT2Config, into directory: URL) throws {
        let json = try JSONSerialization.data(withJSONObject: configJSON(config), options: [.prettyPrinted, .sortedKeys])
        try Files.writeAtomically(json, to: directory.appendingPathComponent("config.json"))
    }

    /// The tokenizer files of `source` that exist, copied into `directory`.
    public static func copyTokenizer(from source: URL, into directory: URL) throws {
        for file in ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
            let from = source.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: from.path) else { continue }
            try Files.writeAtomically(try Files.read(from), to: directory.appendingPathComponent(file))
        }
    }
}

extension GPT2Model {
    /// Saves this model as a Hugging Face folder (`CheckpointExport.save`). Only an unprocessed
    /// model holds the checkpoint's own parameters.
    public func save(to directory: URL, tokenizerFrom: URL?, precision: CheckpointExport.Precision = .f32,
                     metadata: [String: String] = [:], force: Bool = false) throws {
        guard processing.isNone else { throw GPT2Error.exportNeedsCheckpointParameters }
        try CheckpointExport.save(parameters, config: config, to: directory, tokenizerFrom: tokenizerFrom,
                                  precision: precision, metadata: metadata, force: force)
    }
}
